"""The API calls of both clients as data, written once: each operation's method, path, query,
body and how its answer is read (a :class:`Call`), the job parameters of the one-call
workflows, and the parts of ``wait`` and ``download`` that do no I/O. ``Client`` and
``AsyncClient`` only send a Call (``_call``) and sleep, each in its own way."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from boltzgen import schemas
from boltzgen.client.errors import ApiError, JobFailedError
from boltzgen.client.retries import retry_after
from boltzgen.client.wire import job_body, list_params, system_body

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer (``parse`` of the JSON body; None: no
    body, e.g. a 204). A POST with ``idempotent`` carries an ``Idempotency-Key`` (the one
    given, else a fresh UUID), the same on every retry of the call."""

    method: str
    path: str
    parse: Callable[[Any], T] | None = None
    params: dict[str, Any] | None = None
    json: Any = None
    idempotent: bool = False
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` for this call."""
        headers = dict(self.headers)
        if self.idempotent:
            headers["Idempotency-Key"] = self.idempotency_key or str(uuid.uuid4())
        kw: dict[str, Any] = {"headers": headers} if headers else {}
        if self.params is not None:
            kw["params"] = self.params
        if self.json is not None:
            kw["json"] = self.json
        return kw

    def read(self, resp: httpx.Response) -> T:
        return None if self.parse is None else self.parse(resp.json())  # type: ignore[return-value]


def _items(model: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    return lambda data: [model(x) for x in data]


def _posted(path: str, parse: Callable[[Any], T], body: Any, key: str | None = None) -> Call[T]:
    return Call("POST", path, parse, json=body, idempotent=True, idempotency_key=key)


def _page(cursor: str | None, limit: int) -> dict[str, Any]:
    return {"limit": limit, **({"cursor": cursor} if cursor else {})}


# ---------------------------------------------------------------- ops
def health() -> Call[dict[str, Any]]:
    return Call("GET", "/healthz", dict)


def kinds() -> Call[list[schemas.KindInfo]]:
    return Call("GET", "/v1/kinds", _items(schemas.KindInfo.model_validate))


# ---------------------------------------------------------------- systems
def upload_system(
    pdb, name, forcefield, solvent, temperature, constraints, idempotency_key
) -> Call[schemas.SystemInfo]:
    """Reads ``pdb`` when it is a path (blocking file I/O)."""
    body = system_body(pdb, name, forcefield, solvent, temperature, constraints)
    return _posted("/v1/systems", schemas.SystemInfo.model_validate, body, idempotency_key)


def get_system(system_id: str) -> Call[schemas.SystemInfo]:
    return Call("GET", f"/v1/systems/{system_id}", schemas.SystemInfo.model_validate)


def list_systems(cursor: str | None, limit: int) -> Call[schemas.SystemPage]:
    return Call(
        "GET", "/v1/systems", schemas.SystemPage.model_validate, params=_page(cursor, limit)
    )


def delete_system(system_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/systems/{system_id}")


# ---------------------------------------------------------------- jobs
def submit(
    kind, system_id, model_id, params, max_attempts, idempotency_key
) -> Call[schemas.JobInfo]:
    body = job_body(kind, system_id, model_id, params, max_attempts)
    return _posted("/v1/jobs", schemas.JobInfo.model_validate, body, idempotency_key)


def get_job(job_id: str) -> Call[schemas.JobInfo]:
    return Call("GET", f"/v1/jobs/{job_id}", schemas.JobInfo.model_validate)


def list_jobs(status, kind, cursor, limit) -> Call[schemas.JobPage]:
    params = list_params(status, kind, cursor, limit)
    return Call("GET", "/v1/jobs", schemas.JobPage.model_validate, params=params)


def cancel(job_id: str) -> Call[schemas.JobInfo]:
    return Call("POST", f"/v1/jobs/{job_id}/cancel", schemas.JobInfo.model_validate)


def delete_job(job_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/jobs/{job_id}")


def events_headers(last_event_id: str | int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


# ---------------------------------------------------------------- artifacts and models
def artifacts(job_id: str) -> Call[list[schemas.ArtifactInfo]]:
    return Call(
        "GET",
        f"/v1/jobs/{job_id}/artifacts",
        lambda d: schemas.ArtifactList.model_validate(d).items,
    )


def artifact_info(artifact_id: str) -> Call[schemas.ArtifactInfo]:
    return Call("GET", f"/v1/artifacts/{artifact_id}", schemas.ArtifactInfo.model_validate)


def named_artifact(
    items: list[schemas.ArtifactInfo], job_id: str, name: str
) -> schemas.ArtifactInfo:
    """The artifact ``name`` among a job's ``items``; ApiError 404 when it has none."""
    for a in items:
        if a.name == name:
            return a
    raise ApiError(404, {"title": "Not Found", "detail": f"job {job_id} has no {name!r}"})


def download_path(info: schemas.ArtifactInfo, dest: str | os.PathLike[str] | None) -> Path:
    """Where ``download`` writes ``info``: ``dest``, or its name in ``dest`` (a directory)
    or in the current directory."""
    path = Path(dest) if dest is not None else Path(Path(info.name).name)
    return path / Path(info.name).name if path.is_dir() else path


def partial_file(dest: Path) -> Path:
    """``<dest>.part``, where a download is written (and resumed) before it is complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.with_name(dest.name + ".part")


def resume_headers(part: Path) -> dict[str, str]:
    """A Range request for the rest of a partial download (none when nothing is there)."""
    have = part.stat().st_size if part.exists() else 0
    return {"Range": f"bytes={have}-"} if have else {}


def list_models(cursor: str | None, limit: int) -> Call[schemas.ModelPage]:
    return Call("GET", "/v1/models", schemas.ModelPage.model_validate, params=_page(cursor, limit))


def get_model(model_id: str) -> Call[schemas.ModelInfo]:
    return Call("GET", f"/v1/models/{model_id}", schemas.ModelInfo.model_validate)


# ---------------------------------------------------------------- admin
def list_keys() -> Call[list[schemas.KeyInfo]]:
    return Call("GET", "/v1/keys", _items(schemas.KeyInfo.model_validate))


def revoke_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/keys/{key_id}")


def create_key(name: str) -> Call[schemas.KeyInfo]:
    return _posted("/v1/keys", schemas.KeyInfo.model_validate, {"name": name})


# ---------------------------------------------------------------- one-call workflows
def pipeline_params(
    pdb: Any, system_id: str | None, budget_minutes: float | None, cvs, params: dict[str, Any]
) -> dict[str, Any]:
    """The ``pipeline`` job's parameters of ``run`` (which takes one of pdb and system_id)."""
    if (pdb is None) == (system_id is None):
        raise ValueError("give exactly one of pdb and system_id")
    body: dict[str, Any] = dict(params)
    if budget_minutes is not None:
        body["budget_minutes"] = budget_minutes
    if cvs is not None:
        body["cvs"] = list(cvs)
    return body


def cg_params(data, beads, reference, config, forcefield: str | None = None) -> dict[str, Any]:
    """The parameters of a ``cg_train`` job, or with ``forcefield`` a ``cg_simulate`` one."""
    params = {"data": data, "beads": beads, "reference": reference, "config": config}
    return params if forcefield is None else {"forcefield": forcefield, **params}


class Watch:
    """What ``wait`` does between polls, without the I/O: shows the job (a tqdm bar with
    ``progress=True``, a callback with a callable), keeps the deadline and says how long to
    sleep (``poll``, else the server's Retry-After, at most 2 s)."""

    def __init__(
        self,
        job_id: str,
        timeout: float | None,
        progress: bool | Callable[[schemas.JobInfo], None],
        poll: float | None,
    ) -> None:
        self.job_id, self.timeout, self.progress, self.poll = job_id, timeout, progress, poll
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.job: schemas.JobInfo | None = None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=1.0, desc=job_id, unit="job", bar_format="{l_bar}{bar}| {postfix}"
            )

    def see(self, resp: httpx.Response) -> float | None:
        """Seconds to sleep before the next poll; None once the job has ended. Raises
        TimeoutError past the deadline."""
        job = self.job = get_job(self.job_id).read(resp)
        if self.bar is not None:
            self.bar.n = job.progress
            self.bar.set_postfix_str(f"{job.status} {job.message}"[:60])
            self.bar.refresh()
        elif callable(self.progress):
            self.progress(job)
        if job.done:
            return None
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError(f"job {self.job_id} still {job.status} after {self.timeout} s")
        return self.poll if self.poll is not None else min(retry_after(resp, 0), 2.0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def outcome(self, raise_on_failure: bool) -> schemas.JobInfo:
        """The ended job; JobFailedError unless it succeeded (with ``raise_on_failure``)."""
        assert self.job is not None
        if raise_on_failure and self.job.status != "succeeded":
            raise JobFailedError(self.job)
        return self.job
