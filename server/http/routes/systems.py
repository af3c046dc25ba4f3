"""``/v1/systems``: upload (JSON or multipart PDB), list, get, delete.

An upload is validated by building the OpenMM system with ``boltzgen.systems.System``, so a
job never starts on a structure the library would reject.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from boltzgen.errors import BoltzgenError
from boltzgen.schemas import (
    CONSTRAINT_NAMES,
    FORCEFIELD_PATTERN,
    PDB_RECORD,
    SOLVENT_NAMES,
    SystemCreate,
    SystemInfo,
    SystemPage,
)
from server.http.convert import system_info
from server.http.deps import SettingsDep, StoreDep, Who
from server.http.idempotency import Made, idempotent
from server.http.pagination import Paging, read_page
from server.http.problems import (
    BODY_PROBLEMS,
    Problem,
    boltzgen_problem,
    found,
    is_json_type,
    not_found,
    problem_responses,
)
from server.http.routes import V1

router = APIRouter(prefix=V1, tags=["systems"])

FF_NAME = re.compile(FORCEFIELD_PATTERN)
# the multipart form's forcefield field: one or more names, comma-separated
FORCEFIELDS_PATTERN = "^{0}(,{0})*$".format(FORCEFIELD_PATTERN.strip("^$"))


async def read_system_request(request: Request) -> SystemCreate:
    """The upload from a JSON body or a multipart form (``pdb`` file + fields)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        upload = form.get("pdb") or form.get("file")
        if upload is None or isinstance(upload, str):
            text = upload if isinstance(upload, str) else None
        else:
            text = (await upload.read()).decode("utf-8", errors="replace")
        if text is None:
            raise Problem(422, "Missing PDB", "send the structure as multipart field 'pdb'")
        if not re.search(PDB_RECORD, text):  # the schema cannot look inside a file: say why
            raise Problem(
                422,
                "Invalid structure",
                "the uploaded file has no ATOM/HETATM record",
                type_="structure",
            )
        ff = form.getlist("forcefield")
        ffs = [f.strip() for item in ff for f in str(item).split(",") if f.strip()]
        fields: dict[str, Any] = {"pdb": text}
        if ffs:
            fields["forcefield"] = ffs
        for name in ("name", "solvent", "temperature", "constraints"):
            if form.get(name) not in (None, ""):
                fields[name] = form.get(name)
    elif not ctype or is_json_type(ctype):
        try:  # BodyLimit has already refused deep nesting and NaN/Infinity literals
            fields = json.loads(await request.body())
        except ValueError as exc:
            raise Problem(
                400,
                "Invalid JSON",
                f"the request body is not valid JSON: {exc}",
                type_="invalid-json",
            ) from None
        if not isinstance(fields, dict):
            raise Problem(
                422, "Invalid system", "the body must be a JSON object", type_="validation"
            )
    else:
        raise Problem(
            415,
            "Unsupported Media Type",
            f"send application/json or multipart/form-data, not {ctype.split(';')[0]!r}",
            type_="media-type",
        )
    try:
        return SystemCreate.model_validate(fields)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Problem(422, "Request validation failed", detail, type_="validation") from None


def count_atoms(pdb: str) -> int:
    return sum(1 for line in pdb.splitlines() if line.startswith(("ATOM", "HETATM")))


@router.post(
    "/systems",
    status_code=201,
    response_model=SystemInfo,
    responses=problem_responses(*BODY_PROBLEMS),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": SystemCreate.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "pdb": {"type": "string", "format": "binary"},
                            "name": {"type": "string", "maxLength": 200},
                            "forcefield": {
                                "type": "string",
                                "description": "comma-separated force-field XML files",
                                "pattern": FORCEFIELDS_PATTERN,
                            },
                            "solvent": {"type": "string", "enum": list(SOLVENT_NAMES)},
                            "temperature": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 10_000,
                            },
                            "constraints": {"type": "string", "enum": list(CONSTRAINT_NAMES)},
                        },
                        "required": ["pdb"],
                    }
                },
            },
        }
    },
)
async def create_system(
    request: Request,
    store: StoreDep,
    who: Who,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Upload a PDB with force field, solvent and temperature; validated by building the
    OpenMM system (``boltzgen.systems.System.from_pdb``)."""
    req = await read_system_request(request)
    if req.temperature > settings.max_temperature:
        raise Problem(
            422,
            "Temperature out of range",
            f"temperature={req.temperature} K; this server allows at most "
            f"{settings.max_temperature} K",
            type_="limit-temperature",
        )
    n = count_atoms(req.pdb)
    if n > settings.max_atoms:
        raise Problem(
            422,
            "Too many atoms",
            f"the PDB has {n} atoms; this server accepts at most {settings.max_atoms}",
            type_="limit-atoms",
        )

    for ff in req.forcefield:
        if not FF_NAME.fullmatch(ff):  # the schema's pattern, with a message
            raise Problem(
                422,
                "Invalid force field",
                f"force field {ff!r}: give a file name shipped with OpenMM, e.g. amber99sbildn.xml",
                type_="ForceFieldError",
            )
    # text without a newline would be read as a *path* on the server: never allow that
    pdb_text = req.pdb if "\n" in req.pdb else req.pdb + "\n"

    def build():
        from boltzgen.systems import System

        try:
            system = System.from_pdb(
                pdb_text,
                forcefield=tuple(req.forcefield),
                solvent=req.solvent,
                temperature=req.temperature,
                constraints=req.constraints,
            )
        except BoltzgenError as exc:
            raise boltzgen_problem(exc) from None
        except (ValueError, KeyError) as exc:  # OpenMM's own parse errors
            raise Problem(
                422, "Invalid structure", f"{type(exc).__name__}: {exc}", type_="structure"
            ) from None
        if system.n_atoms > settings.max_atoms:
            raise Problem(
                422,
                "Too many atoms",
                f"{system.n_atoms} > {settings.max_atoms}",
                type_="limit-atoms",
            )
        return system

    def run() -> JSONResponse:
        # building the force field is the slow part: not inside the write transaction, and
        # not at all when the Idempotency-Key has been answered before
        replay = idempotency_key and store.idem_get(who.owner, idempotency_key)
        system = None if replay else build()
        return idempotent(
            store, who, idempotency_key, "/v1/systems", req.model_dump(), partial(insert, system)
        )

    def insert(system, conn: Connection) -> Made:
        row = store.add_system(
            who.owner,
            conn,
            name=req.name or f"system-{system.n_atoms}-atoms",
            n_atoms=int(system.n_atoms),
            solvent=str(system.solvent),
            temperature=float(system.temperature),
            forcefield=list(req.forcefield),
            spec=system.to_spec(),
        )
        return 201, system_info(row).model_dump(mode="json"), f"/v1/systems/{row['id']}", {}

    return await run_in_threadpool(run)


@router.get("/systems", response_model=SystemPage, responses=problem_responses(422))
def list_systems(store: StoreDep, who: Who, paging: Paging) -> SystemPage:
    page = read_page(store.list_systems, who.scope, paging, system_info)
    return SystemPage(items=page.items, next_cursor=page.next_cursor)


@router.get("/systems/{system_id}", response_model=SystemInfo, responses=problem_responses(404))
def get_system(system_id: str, store: StoreDep, who: Who) -> SystemInfo:
    return system_info(found(store.get_system(system_id, who.scope), "system", system_id))


@router.delete("/systems/{system_id}", status_code=204, responses=problem_responses(404))
def delete_system(system_id: str, store: StoreDep, who: Who) -> Response:
    if not store.delete_system(system_id, who.scope):
        raise not_found("system", system_id)
    return Response(status_code=204)
