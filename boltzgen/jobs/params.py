"""Bases of job parameters: what every kind's pydantic parameter model inherits.

Kinds that act on a molecule take :class:`SystemParams` (field ``system``: a
``System.to_spec()`` dict); kinds that reuse a trained generator take :class:`ModelParams`
(field ``model``: the path of a saved generator). The service fills both from ``system_id`` /
``model_id``; a client never sends them (:data:`SERVICE_FIELDS`). A field typed
:data:`ArtifactPath` takes an artifact id from the client (e.g. a simulate job's
``trajectory.h5``) and holds that file's path inside the job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "SERVICE_FIELDS",
    "ArtifactPath",
    "ArtifactRef",
    "JobParams",
    "ModelParams",
    "PlatformName",
    "SystemParams",
    "artifact_fields",
    "check_platform_name",
    "iter_params",
    "non_finite_field",
]

#: Fields the service fills in (from ``system_id`` / ``model_id``); not part of a client's schema.
SERVICE_FIELDS = ("system", "model")


class ArtifactRef:
    """Field marker: the client sends the id of one of its artifacts; the service checks
    ownership and hands the job the file's path instead. Use through ``ArtifactPath``."""

    def __repr__(self) -> str:
        return "ArtifactRef()"


#: A parameter holding an artifact id on the wire and a file path inside the job.
ArtifactPath = Annotated[str, ArtifactRef()]


def _refers_to_artifact(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        return any(isinstance(m, ArtifactRef) for m in meta) or _refers_to_artifact(base)
    return any(_refers_to_artifact(a) for a in get_args(tp))


def artifact_fields(params: type[BaseModel]) -> list[str]:
    """Names of the ``ArtifactPath`` fields of a parameter model (``ArtifactPath | None`` too)."""
    return [
        name
        for name, f in params.model_fields.items()
        if any(isinstance(m, ArtifactRef) for m in f.metadata) or _refers_to_artifact(f.annotation)
    ]


#: OpenMM platform names a job may ask for (case-insensitive), besides ``auto``; whether the
#: worker's OpenMM has it is known only there.
PLATFORM_NAMES = ("Reference", "CPU", "CUDA", "OpenCL", "HIP")


def check_platform_name(name: str) -> str:
    """``name`` if it is ``auto`` or an OpenMM platform name; else ValueError naming them."""
    if name.lower() != "auto" and name.lower() not in {p.lower() for p in PLATFORM_NAMES}:
        raise ValueError(f"unknown OpenMM platform {name!r}; use 'auto' or one of {PLATFORM_NAMES}")
    return name


#: A job's OpenMM platform: the schema lists the names as spelled here (any case is accepted).
PlatformName = Annotated[
    str,
    AfterValidator(check_platform_name),
    Field(
        description="OpenMM platform name or 'auto'",
        json_schema_extra={"enum": ["auto", *PLATFORM_NAMES]},
    ),
]


def iter_params(value: Any, path: str = "", *, set_only: bool = False) -> Iterator[tuple]:
    """(dotted path, name, value) of everything inside ``value``, depth first: a model's fields
    (with ``set_only``, only those set explicitly), dict entries and list / tuple items."""
    if isinstance(value, BaseModel):
        names = sorted(value.model_fields_set) if set_only else list(type(value).model_fields)
        items: Iterable[tuple[str, Any]] = ((n, getattr(value, n)) for n in names)
    elif isinstance(value, dict):
        items = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return
    for name, item in items:
        where = f"{path}.{name}" if path else name
        yield where, name, item
        yield from iter_params(item, where, set_only=set_only)


def non_finite_field(value: Any, path: str = "") -> tuple[str, float] | None:
    """(dotted path, value) of the first NaN or infinite float in ``value`` (a model: its
    explicitly set fields, nested models, lists, tuples and dicts; the service-filled fields
    at the top are skipped), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    for where, _, item in iter_params(value, path, set_only=True):
        if not path and where.split(".", 1)[0] in SERVICE_FIELDS:
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return where, item
    return None


def _numeric(tp: Any) -> bool:
    """``int``/``float`` or an optional/annotated one (not ``bool``, not a union with str)."""
    if tp in (int, float):
        return True
    if get_origin(tp) is Annotated:
        return _numeric(get_args(tp)[0])
    args = [a for a in get_args(tp) if a is not type(None)]
    return bool(args) and all(a in (int, float) for a in args)


class JobParams(BaseModel):
    """Base of all job parameters: unknown fields are an error, not silently ignored, and every
    number is finite (a NaN or infinity is rejected naming its field, at submit, instead of
    failing the job later or being echoed back as null)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # lax pydantic reads true as the integer 1: a count or a seed given as a boolean is a
        # client bug, not a number
        if isinstance(data, dict):
            for name, value in data.items():
                f = cls.model_fields.get(name) if isinstance(name, str) else None
                if isinstance(value, bool) and f is not None and _numeric(f.annotation):
                    raise ValueError(f"{name} must be a number, not the boolean {value}")
        return data

    @model_validator(mode="after")
    def _finite_everywhere(self):
        # allow_inf_nan covers this model's own float fields; this also covers nested models
        # with their own config and values typed Any
        found = non_finite_field(self)
        if found is not None:
            raise ValueError(f"{found[0]} must be a finite number, got {found[1]}")
        return self


class SystemParams(JobParams):
    """Parameters of a kind that acts on a molecular system."""

    system: dict[str, Any] = Field(
        description="System.to_spec() of the system; filled in by the service from system_id"
    )

    def load_system(self):
        """The ``boltzgen.systems.System`` described by ``system``."""
        from boltzgen.systems import System

        return System.from_spec(self.system)


class ModelParams(SystemParams):
    """Parameters of a kind that reuses a trained Boltzmann generator."""

    model: str = Field(
        description="path of a saved generator (gen.save); filled in by the service from model_id"
    )
