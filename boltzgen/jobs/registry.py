"""The registry of job kinds: a name, a pydantic parameter model and a run function.

Built-in kinds are the modules of :mod:`boltzgen.jobs.kinds`, discovered on first use (adding
a kind is adding one module there); plugin kinds come from modules named in
``$BOLTZGEN_JOB_MODULES`` (comma-separated), imported the same way.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from boltzgen.errors import JobParamsError
from boltzgen.jobs.params import SERVICE_FIELDS, ModelParams, SystemParams, artifact_fields

__all__ = [
    "PLUGINS_ENV",
    "JobKind",
    "ProgressFn",
    "RunFn",
    "get_kind",
    "job_kind",
    "job_kinds",
    "load_plugins",
    "validate_params",
]

ProgressFn = Callable[[float, str], None]
RunFn = Callable[[Any, Path, ProgressFn, Path], dict[str, Any]]

#: Environment variable: comma-separated modules imported before running a job (plugin kinds).
PLUGINS_ENV = "BOLTZGEN_JOB_MODULES"
_BUILTIN_PACKAGE = "boltzgen.jobs.kinds"


@dataclass(frozen=True)
class JobKind:
    """A registered job kind. ``gpu`` asks executors that schedule GPUs (Ray) for one."""

    name: str
    params: type[BaseModel]
    run: RunFn
    description: str
    gpu: bool = False

    @property
    def needs_system(self) -> bool:
        return issubclass(self.params, SystemParams)

    @property
    def needs_model(self) -> bool:
        return issubclass(self.params, ModelParams)

    @property
    def artifact_fields(self) -> list[str]:
        return artifact_fields(self.params)

    def client_schema(self, ref_template: str | None = None) -> dict[str, Any]:
        """JSON schema of the parameters a client sends (without the service-filled fields);
        ``ref_template`` (pydantic's, e.g. ``"#/components/schemas/{model}"``) places the
        nested models' references (an OpenAPI document puts them in its components)."""
        schema = (
            self.params.model_json_schema()
            if ref_template is None
            else self.params.model_json_schema(ref_template=ref_template)
        )
        props = dict(schema.get("properties", {}))
        required = [r for r in schema.get("required", []) if r not in SERVICE_FIELDS]
        for name in SERVICE_FIELDS:
            props.pop(name, None)
        return {**schema, "properties": props, "required": required}


_KINDS: dict[str, JobKind] = {}
_builtins_loaded = False


def job_kind(
    name: str, params: type[BaseModel], *, gpu: bool = False, description: str | None = None
) -> Callable[[RunFn], RunFn]:
    """Register ``fn`` as the job kind ``name`` with parameter model ``params``::

        @job_kind("train", TrainParams, gpu=True)
        def train(params: TrainParams, workdir, progress, checkpoint_dir) -> dict: ...

    ``run(params, workdir, progress, checkpoint_dir)`` writes its artifacts into ``workdir``,
    reports ``progress(fraction, message)``, keeps what it needs to resume in
    ``checkpoint_dir`` (which survives a crash) and returns a JSON-able summary.
    """

    def register(fn: RunFn) -> RunFn:
        old = _KINDS.get(name)
        if old is not None and old.run.__qualname__ != fn.__qualname__:
            raise ValueError(f"job kind {name!r} is already registered by {old.run.__qualname__}")
        doc = description or (fn.__doc__ or name).strip().splitlines()[0]
        _KINDS[name] = JobKind(name=name, params=params, run=fn, description=doc, gpu=gpu)
        return fn

    return register


def _load_builtins() -> None:
    """Import every module of :mod:`boltzgen.jobs.kinds` (each registers its kinds)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    package = importlib.import_module(_BUILTIN_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{_BUILTIN_PACKAGE}.{info.name}")
    _builtins_loaded = True


def load_plugins(modules: str | None = None) -> None:
    """Import plugin modules (comma-separated; default: ``$BOLTZGEN_JOB_MODULES``)."""
    spec = modules if modules is not None else os.environ.get(PLUGINS_ENV, "")
    for mod in filter(None, (m.strip() for m in spec.split(","))):
        importlib.import_module(mod)


def job_kinds() -> dict[str, JobKind]:
    """All registered kinds by name: the built-in ones and plugins named in the environment."""
    _load_builtins()
    load_plugins()
    return dict(_KINDS)


def get_kind(name: str) -> JobKind:
    """The kind ``name``; raises JobParamsError naming the known kinds."""
    kinds = job_kinds()
    if name not in kinds:
        raise JobParamsError(f"unknown job kind {name!r}; known kinds: {sorted(kinds)}")
    return kinds[name]


def validate_params(kind: str | JobKind, params: dict[str, Any]) -> BaseModel:
    """Validate ``params`` for ``kind``; raises JobParamsError with pydantic's field messages."""
    k = get_kind(kind) if isinstance(kind, str) else kind
    try:
        return k.params.model_validate(params)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise JobParamsError(f"invalid parameters for job kind {k.name!r}: {msgs}") from exc
