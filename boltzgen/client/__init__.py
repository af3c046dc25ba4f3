"""Python SDK of the boltzgen REST service (httpx; no server code needed).

    from boltzgen.client import Client
    with Client("http://127.0.0.1:8000", api_key="bgk_...") as c:
        system = c.upload_system("data/alanine-dipeptide.pdb", solvent="vacuum")
        job = c.submit("simulate", system_id=system.id, params={"n_steps": 10_000})
        job = c.wait(job.id, progress=True)            # tqdm bar; raises JobFailedError
        traj = c.load_trajectory(job.id, "trajectory.h5")   # mdtraj.Trajectory

Every POST carries an ``Idempotency-Key`` (a fresh UUID unless you pass one), so the client
can retry safely: 429 and 503 are retried after the server's ``Retry-After``, connection
errors with exponential backoff, up to ``max_retries`` times. Errors raise ``ApiError`` with the
RFC 9457 problem document. ``AsyncClient`` has the same core methods as coroutines.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from boltzgen.errors import BoltzgenError
from boltzgen.schemas import (
    ArtifactInfo,
    ArtifactList,
    JobInfo,
    JobPage,
    KeyInfo,
    KindInfo,
    ModelInfo,
    ModelPage,
    SystemInfo,
    SystemPage,
)

__all__ = [
    "ApiError",
    "ArtifactInfo",
    "AsyncClient",
    "Client",
    "JobFailedError",
    "JobInfo",
    "ModelInfo",
    "SystemInfo",
]

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 503)


class ApiError(BoltzgenError):
    """An error response. ``status`` is the HTTP status, ``problem`` the problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title", "error")
        detail = problem.get("detail")
        super().__init__(f"HTTP {status} {title}" + (f": {detail}" if detail else ""))


class JobFailedError(BoltzgenError):
    """``wait`` saw the job end as failed or cancelled. ``job`` is the final JobInfo."""

    def __init__(self, job: JobInfo) -> None:
        self.job = job
        err = job.error or {}
        super().__init__(
            f"job {job.id} ({job.kind}) {job.status}"
            + (f": {err.get('type')}: {err.get('message')}" if err else "")
        )


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        problem = resp.json()
        if not isinstance(problem, dict):
            problem = {"title": str(problem)}
    except ValueError:
        problem = {"title": resp.reason_phrase, "detail": resp.text[:500]}
    raise ApiError(resp.status_code, problem)


def _retry_after(resp: httpx.Response | None, attempt: int) -> float:
    if resp is not None:
        value = resp.headers.get("retry-after")
        if value:
            try:
                return min(max(float(value), 0.0), 60.0)
            except ValueError:
                pass
    return min(0.25 * 2**attempt, 10.0)


_TRANSIENT = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def _next_delay(attempt: int, max_retries: int, resp: httpx.Response | None) -> float | None:
    """Seconds to wait before retry ``attempt + 1``, or None to stop. ``resp`` None means a
    connection error (always retried); a response is retried only on 429/503."""
    if attempt >= max_retries:
        return None
    if resp is None:
        return _retry_after(None, attempt)
    return _retry_after(resp, attempt) if resp.status_code in RETRY_STATUSES else None


def _pdb_text(pdb: str | os.PathLike[str]) -> str:
    if isinstance(pdb, os.PathLike) or ("\n" not in str(pdb) and Path(str(pdb)).is_file()):
        return Path(pdb).read_text()
    return str(pdb)


def _system_body(
    pdb: str | os.PathLike[str],
    name: str | None,
    forcefield: tuple[str, ...] | list[str],
    solvent: str,
    temperature: float,
    constraints: str | None,
) -> dict[str, Any]:
    return {
        "pdb": _pdb_text(pdb),
        "name": name,
        "forcefield": list(forcefield),
        "solvent": solvent,
        "temperature": temperature,
        "constraints": constraints,
    }


def _job_body(kind, system_id, model_id, params, max_attempts) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "params": dict(params or {})}
    if system_id:
        body["system_id"] = system_id
    if model_id:
        body["model_id"] = model_id
    if max_attempts:
        body["max_attempts"] = max_attempts
    return body


def _headers(api_key: str | None) -> dict[str, str]:
    h = {"User-Agent": "boltzgen-client"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from text lines: dicts with ``id``, ``event``, ``data`` (parsed)."""
    event: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                raw = "\n".join(data)
                try:
                    event["data"] = json.loads(raw)
                except ValueError:
                    event["data"] = raw
                event.setdefault("event", "message")
                yield event
            event, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field in ("id", "event"):
                event[field] = value


class Client:
    """Synchronous client. ``base_url`` and ``api_key`` default to ``$BOLTZGEN_URL`` and
    ``$BOLTZGEN_API_KEY``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("BOLTZGEN_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("BOLTZGEN_API_KEY")
        self.max_retries = max_retries
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries (429/503 after Retry-After; connection errors)."""
        attempt = 0
        while True:
            try:
                resp = self.http.request(method, path, **kwargs)
            except _TRANSIENT:
                if (delay := _next_delay(attempt, self.max_retries, None)) is None:
                    raise
            else:
                if (delay := _next_delay(attempt, self.max_retries, resp)) is None:
                    _raise_for(resp)
                    return resp
            time.sleep(delay)
            attempt += 1

    def _post(self, path: str, body: Any, idempotency_key: str | None) -> httpx.Response:
        key = idempotency_key or str(uuid.uuid4())
        return self.request("POST", path, json=body, headers={"Idempotency-Key": key})

    # ------------------------------------------------------------ ops
    def health(self) -> dict[str, Any]:
        return self.request("GET", "/healthz").json()

    def kinds(self) -> list[KindInfo]:
        return [KindInfo.model_validate(k) for k in self.request("GET", "/v1/kinds").json()]

    # ------------------------------------------------------------ systems
    def upload_system(
        self,
        pdb: str | os.PathLike[str],
        *,
        name: str | None = None,
        forcefield: tuple[str, ...] | list[str] = ("amber99sbildn.xml",),
        solvent: str = "vacuum",
        temperature: float = 300.0,
        constraints: str | None = None,
        idempotency_key: str | None = None,
    ) -> SystemInfo:
        """Upload a PDB (path or text); the server builds the force field to validate it."""
        body = _system_body(pdb, name, forcefield, solvent, temperature, constraints)
        return SystemInfo.model_validate(self._post("/v1/systems", body, idempotency_key).json())

    def get_system(self, system_id: str) -> SystemInfo:
        return SystemInfo.model_validate(self.request("GET", f"/v1/systems/{system_id}").json())

    def list_systems(self, cursor: str | None = None, limit: int = 50) -> SystemPage:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return SystemPage.model_validate(self.request("GET", "/v1/systems", params=params).json())

    def delete_system(self, system_id: str) -> None:
        self.request("DELETE", f"/v1/systems/{system_id}")

    # ------------------------------------------------------------ jobs
    def submit(
        self,
        kind: str,
        *,
        system_id: str | None = None,
        model_id: str | None = None,
        params: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> JobInfo:
        """Submit a job (202); returns the queued job."""
        body = _job_body(kind, system_id, model_id, params, max_attempts)
        return JobInfo.model_validate(self._post("/v1/jobs", body, idempotency_key).json())

    def get_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(self.request("GET", f"/v1/jobs/{job_id}").json())

    def list_jobs(
        self,
        status: str | list[str] | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if kind:
            params["kind"] = kind
        if cursor:
            params["cursor"] = cursor
        return JobPage.model_validate(self.request("GET", "/v1/jobs", params=params).json())

    def iter_jobs(self, status=None, kind=None, page_size: int = 100) -> Iterator[JobInfo]:
        """All jobs, newest first, following the cursor."""
        cursor = None
        while True:
            page = self.list_jobs(status, kind, cursor, page_size)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(self.request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def delete_job(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{job_id}")

    def events(self, job_id: str, last_event_id: str | int | None = None) -> Iterator[dict]:
        """The job's server-sent events (status/progress) until it ends."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        with self.http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                _raise_for(resp)
            yield from parse_sse(resp.iter_lines())

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        progress: bool | Callable[[JobInfo], None] = False,
        poll: float | None = None,
        raise_on_failure: bool = True,
    ) -> JobInfo:
        """Poll until the job ends (interval: ``poll`` or the server's Retry-After). ``progress``
        True shows a tqdm bar; a callable is called with every JobInfo seen."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=1.0, desc=job_id, unit="job", bar_format="{l_bar}{bar}| {postfix}")
        try:
            while True:
                resp = self.request("GET", f"/v1/jobs/{job_id}")
                job = JobInfo.model_validate(resp.json())
                if bar is not None:
                    bar.n = job.progress
                    bar.set_postfix_str(f"{job.status} {job.message}"[:60])
                    bar.refresh()
                elif callable(progress):
                    progress(job)
                if job.done:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
                time.sleep(poll if poll is not None else min(_retry_after(resp, 0), 2.0))
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure and job.status != "succeeded":
            raise JobFailedError(job)
        return job

    # ------------------------------------------------------------ artifacts and models
    def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        data = self.request("GET", f"/v1/jobs/{job_id}/artifacts").json()
        return ArtifactList.model_validate(data).items

    def artifact(self, job_id: str, name: str) -> ArtifactInfo:
        for a in self.artifacts(job_id):
            if a.name == name:
                return a
        raise ApiError(404, {"title": "Not Found", "detail": f"job {job_id} has no {name!r}"})

    def download(
        self, artifact: str | ArtifactInfo, dest: str | os.PathLike[str] | None = None
    ) -> Path:
        """Stream an artifact to ``dest`` (a file or a directory; default: its name in the
        current directory). A partial ``<dest>.part`` from an interrupted download is resumed
        with a Range request."""
        info = artifact if isinstance(artifact, ArtifactInfo) else self._artifact_info(artifact)
        dest = Path(dest) if dest is not None else Path(Path(info.name).name)
        if dest.is_dir():
            dest = dest / Path(info.name).name
        self._stream_to(f"/v1/artifacts/{info.id}/content", dest)
        return dest

    def _artifact_info(self, artifact_id: str) -> ArtifactInfo:
        return ArtifactInfo.model_validate(
            self.request("GET", f"/v1/artifacts/{artifact_id}").json()
        )

    def _stream_to(self, path: str, dest: Path) -> None:
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.max_retries + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with self.http.stream("GET", path, headers=headers) as resp:
                    if resp.status_code == 416:  # already complete
                        break
                    if resp.status_code >= 400:
                        resp.read()
                        _raise_for(resp)
                    mode = "ab" if resp.status_code == 206 else "wb"
                    with open(part, mode) as fh:
                        for chunk in resp.iter_bytes(1 << 20):
                            fh.write(chunk)
                break
            except _TRANSIENT:
                if (delay := _next_delay(attempt, self.max_retries, None)) is None:
                    raise
                time.sleep(delay)
        os.replace(part, dest)

    def load_trajectory(self, job_or_artifact: str, name: str | None = None):
        """Download an HDF5 artifact into an ``mdtraj.Trajectory``: pass an artifact id, or a
        job id and the artifact's name (e.g. ``"trajectory.h5"``)."""
        import tempfile

        import mdtraj

        info = (
            self.artifact(job_or_artifact, name)
            if name is not None
            else self._artifact_info(job_or_artifact)
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = self.download(info, Path(tmp) / Path(info.name).name)
            return mdtraj.load(str(path))

    def list_models(self, cursor: str | None = None, limit: int = 50) -> ModelPage:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return ModelPage.model_validate(self.request("GET", "/v1/models", params=params).json())

    def get_model(self, model_id: str) -> ModelInfo:
        return ModelInfo.model_validate(self.request("GET", f"/v1/models/{model_id}").json())

    def download_model(self, model_id: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        self._stream_to(f"/v1/models/{model_id}/content", dest)
        return dest

    # ------------------------------------------------------------ admin
    def create_key(self, name: str = "") -> KeyInfo:
        """Admin only: a new API key (``.key`` holds the plaintext, shown once)."""
        return KeyInfo.model_validate(self._post("/v1/keys", {"name": name}, None).json())


class AsyncClient:
    """The core of ``Client`` as coroutines (httpx.AsyncClient)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("BOLTZGEN_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("BOLTZGEN_API_KEY")
        self.max_retries = max_retries
        kwargs: dict[str, Any] = {"limits": limits} if limits is not None else {}
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
            **kwargs,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                resp = await self.http.request(method, path, **kwargs)
            except _TRANSIENT:
                if (delay := _next_delay(attempt, self.max_retries, None)) is None:
                    raise
            else:
                if (delay := _next_delay(attempt, self.max_retries, resp)) is None:
                    _raise_for(resp)
                    return resp
            await asyncio.sleep(delay)
            attempt += 1

    async def upload_system(
        self,
        pdb: str | os.PathLike[str],
        *,
        name: str | None = None,
        forcefield: tuple[str, ...] | list[str] = ("amber99sbildn.xml",),
        solvent: str = "vacuum",
        temperature: float = 300.0,
        constraints: str | None = None,
        idempotency_key: str | None = None,
    ) -> SystemInfo:
        body = _system_body(pdb, name, forcefield, solvent, temperature, constraints)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        resp = await self.request("POST", "/v1/systems", json=body, headers=headers)
        return SystemInfo.model_validate(resp.json())

    async def submit(
        self,
        kind: str,
        *,
        system_id: str | None = None,
        model_id: str | None = None,
        params: dict[str, Any] | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
    ) -> JobInfo:
        body = _job_body(kind, system_id, model_id, params, max_attempts)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        resp = await self.request("POST", "/v1/jobs", json=body, headers=headers)
        return JobInfo.model_validate(resp.json())

    async def get_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate((await self.request("GET", f"/v1/jobs/{job_id}")).json())

    async def cancel(self, job_id: str) -> JobInfo:
        resp = await self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return JobInfo.model_validate(resp.json())

    async def wait(
        self, job_id: str, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> JobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            resp = await self.request("GET", f"/v1/jobs/{job_id}")
            job = JobInfo.model_validate(resp.json())
            if job.done:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            await asyncio.sleep(min(_retry_after(resp, 0), 2.0))
        if raise_on_failure and job.status != "succeeded":
            raise JobFailedError(job)
        return job

    async def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        data = (await self.request("GET", f"/v1/jobs/{job_id}/artifacts")).json()
        return ArtifactList.model_validate(data).items
