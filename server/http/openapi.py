"""The OpenAPI document as the real contract: what FastAPI generates, then

* every error response is ``application/problem+json`` with the ``Problem`` schema (FastAPI's
  own 422 ``HTTPValidationError`` is replaced: the server never sends it), and every API route
  documents 400 (unparsable body), 401, 500, and those with a body 413, 415 and 422;
* the job-submit body is a discriminated union by ``kind``, one variant per registered job
  kind with that kind's parameter schema (built from ``boltzgen.jobs.job_kinds()`` when the app
  is created, so a new kind module shows up without touching the server);
* the API-key schemes are declared, and operations are linked (submit -> get/cancel/artifacts,
  upload -> get/delete, ...).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from boltzgen.jobs import JobKind
from boltzgen.schemas import Problem as ProblemSchema
from server.http.problems import BODY_PROBLEMS, PROBLEM_DESCRIPTIONS, PROBLEM_JSON

REF = "#/components/schemas/"
PROBLEM_REF = {"$ref": f"{REF}Problem"}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _id_schema(required: bool, description: str) -> dict[str, Any]:
    """A resource id in a JobCreate variant: a non-empty string where the kind needs it (null
    or "" would be refused), else optional."""
    if required:
        return {"type": "string", "minLength": 1, "description": description}
    return {"anyOf": [{"type": "string"}, {"type": "null"}], "description": description}


def _component_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def job_create_schemas(kinds: dict[str, JobKind]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ``JobCreate`` union schema, the component schemas it refers to)."""
    components: dict[str, Any] = {}
    variants = []
    mapping = {}
    for name in sorted(kinds):
        kind = kinds[name]
        prefix = f"JobParams_{_component_name(name)}"
        params = kind.client_schema(ref_template=f"{REF}{prefix}__{{model}}")
        for def_name, def_schema in params.pop("$defs", {}).items():
            components[f"{prefix}__{def_name}"] = def_schema
        params["title"] = f"Parameters of {name!r} jobs"
        components[prefix] = params
        required = ["kind"]
        if params.get("required") or params.get("anyOf"):  # {} would not satisfy it
            required.append("params")
        if kind.needs_model:
            required.append("model_id")
        elif kind.needs_system:
            required.append("system_id")
        variant_name = f"JobCreate_{_component_name(name)}"
        components[variant_name] = {
            "title": f"JobCreate[{name}]",
            "description": kind.description,
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "kind": {"type": "string", "const": name, "enum": [name]},
                "params": {"$ref": f"{REF}{prefix}"},
                "system_id": _id_schema(
                    "system_id" in required,
                    "id of one of your systems"
                    + (" (default: the model's)" if kind.needs_model else ""),
                ),
                "model_id": _id_schema("model_id" in required, "id of one of your models"),
                "max_attempts": {
                    "anyOf": [{"type": "integer", "minimum": 1, "maximum": 20}, {"type": "null"}]
                },
            },
            "required": required,
        }
        variants.append({"$ref": f"{REF}{variant_name}"})
        mapping[name] = f"{REF}{variant_name}"
    union = {
        "title": "JobCreate",
        "description": "a job of one of the registered kinds (GET /v1/kinds); `kind` selects "
        "the parameter schema",
        "oneOf": variants,
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    }
    return union, components


def _op_ids(schema: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {
        (path, method): op["operationId"]
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in METHODS and "operationId" in op
    }


# (path, method, status) -> {link name: (target path, target method, {param: expression})}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/v1/jobs", "post", "202"): {
        "GetJob": ("/v1/jobs/{job_id}", "get", {"job_id": "$response.body#/id"}),
        "CancelJob": ("/v1/jobs/{job_id}/cancel", "post", {"job_id": "$response.body#/id"}),
        "ListJobArtifacts": (
            "/v1/jobs/{job_id}/artifacts",
            "get",
            {"job_id": "$response.body#/id"},
        ),
        "DeleteJob": ("/v1/jobs/{job_id}", "delete", {"job_id": "$response.body#/id"}),
    },
    ("/v1/jobs/{job_id}", "get", "200"): {
        "ListJobArtifacts": (
            "/v1/jobs/{job_id}/artifacts",
            "get",
            {"job_id": "$response.body#/id"},
        ),
    },
    ("/v1/jobs/{job_id}/artifacts", "get", "200"): {
        "GetArtifact": (
            "/v1/artifacts/{artifact_id}",
            "get",
            {"artifact_id": "$response.body#/items/0/id"},
        ),
        "DownloadArtifact": (
            "/v1/artifacts/{artifact_id}/content",
            "get",
            {"artifact_id": "$response.body#/items/0/id"},
        ),
    },
    ("/v1/systems", "post", "201"): {
        "GetSystem": ("/v1/systems/{system_id}", "get", {"system_id": "$response.body#/id"}),
        "DeleteSystem": (
            "/v1/systems/{system_id}",
            "delete",
            {"system_id": "$response.body#/id"},
        ),
    },
    ("/v1/models", "get", "200"): {
        "GetModel": ("/v1/models/{model_id}", "get", {"model_id": "$response.body#/items/0/id"}),
    },
    ("/v1/models/{model_id}", "get", "200"): {
        "DownloadModel": (
            "/v1/models/{model_id}/content",
            "get",
            {"model_id": "$response.body#/id"},
        ),
    },
    ("/v1/keys", "post", "201"): {
        "RevokeKey": ("/v1/keys/{key_id}", "delete", {"key_id": "$response.body#/id"}),
    },
}


def _fix_errors(path: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    codes = {500}
    if path.startswith("/v1/"):
        codes |= {400, 401}
        if "requestBody" in op:
            codes |= set(BODY_PROBLEMS)
    for code in codes:
        responses.setdefault(str(code), {"description": PROBLEM_DESCRIPTIONS[code]})
    for code, resp in responses.items():
        if code.isdigit() and int(code) >= 400:
            if resp.get("description") in (None, "", "Validation Error"):
                resp["description"] = PROBLEM_DESCRIPTIONS.get(int(code), "error")
            resp["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}


def build_openapi(app: FastAPI, kinds: dict[str, JobKind]) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    comps = schema.setdefault("components", {})
    schemas = comps.setdefault("schemas", {})
    schemas["Problem"] = ProblemSchema.model_json_schema(ref_template=REF + "{model}")
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    union, variant_schemas = job_create_schemas(kinds)
    schemas.update(variant_schemas)
    comps["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            _fix_errors(path, op)
            if path.startswith("/v1/"):
                op["security"] = [{"bearer": []}, {"apiKey": []}]
    submit = schema["paths"]["/v1/jobs"]["post"]
    submit["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"{REF}JobCreate"}}},
    }
    schemas["JobCreate"] = union
    ids = _op_ids(schema)
    for (path, method, status), links in LINKS.items():
        resp = schema["paths"].get(path, {}).get(method, {}).get("responses", {}).get(status)
        if resp is None:
            continue
        resp["links"] = {
            name: {"operationId": ids[(tpath, tmethod)], "parameters": params}
            for name, (tpath, tmethod, params) in links.items()
            if (tpath, tmethod) in ids
        }
    return schema


def install_openapi(app: FastAPI, kinds: dict[str, JobKind]) -> None:
    """Serve :func:`build_openapi` (built on first request, then cached) at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, kinds)
        return app.openapi_schema

    app.openapi = openapi
