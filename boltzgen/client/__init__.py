"""Python SDK of the boltzgen REST service (httpx; no server code needed).

    from boltzgen.client import Client
    with Client("http://127.0.0.1:8000", api_key="bgk_...") as c:
        system = c.upload_system("data/alanine-dipeptide.pdb", solvent="vacuum")
        job = c.submit("simulate", system_id=system.id, params={"n_steps": 10_000})
        job = c.wait(job.id, progress=True)            # tqdm bar; raises JobFailedError
        traj = c.load_trajectory(job.id, "trajectory.h5")   # mdtraj.Trajectory

Every POST carries an ``Idempotency-Key`` (a fresh UUID unless you pass one), so the client
can retry safely: 429 and 503 are retried after the server's ``Retry-After``, connection
errors with exponential backoff, up to ``max_retries`` times and at most ``max_wait`` seconds
of waiting in all (each 429/503 wait is logged as a warning on the ``boltzgen.client`` logger,
connection retries at INFO); past
that a 429/503 raises ``RateLimitedError``. Errors raise ``ApiError`` with the RFC 9457 problem
document. ``AsyncClient`` has the same methods as coroutines.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from boltzgen.constants import DEFAULT_FORCEFIELD
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
    "RateLimitedError",
    "SystemInfo",
]

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 503)
DEFAULT_MAX_WAIT = 30.0  # seconds a request may spend waiting on retries, in all
log = logging.getLogger("boltzgen.client")


class ApiError(BoltzgenError):
    """An error response. ``status`` is the HTTP status, ``problem`` the problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title", "error")
        detail = problem.get("detail")
        super().__init__(f"HTTP {status} {title}" + (f": {detail}" if detail else ""))


class RateLimitedError(ApiError):
    """A 429 (or 503) that the client stopped retrying: waiting as the server asks
    (``retry_after`` s more) would pass ``max_wait`` in all, or ``max_retries`` was used up.
    ``waited`` is how long this request already waited."""

    def __init__(
        self, status: int, problem: dict[str, Any], *, waited: float, retry_after: float
    ) -> None:
        super().__init__(status, problem)
        self.waited = waited
        self.retry_after = retry_after
        self.args = (
            f"{self.args[0]} (gave up after waiting {waited:.1f} s; the server asks for "
            f"{retry_after:.0f} s more; raise max_wait/max_retries to wait longer)",
        )


class JobFailedError(BoltzgenError):
    """``wait`` saw the job end as failed or cancelled. ``job`` is the final JobInfo."""

    def __init__(self, job: JobInfo) -> None:
        self.job = job
        err = job.error or {}
        super().__init__(
            f"job {job.id} ({job.kind}) {job.status}"
            + (f": {err.get('type')}: {err.get('message')}" if err else "")
        )


def _problem(resp: httpx.Response) -> dict[str, Any]:
    try:
        problem = resp.json()
        if not isinstance(problem, dict):
            problem = {"title": str(problem)}
    except ValueError:
        problem = {"title": resp.reason_phrase, "detail": resp.text[:500]}
    return problem


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    raise ApiError(resp.status_code, _problem(resp))


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


class _Retry:
    """The retry policy of one request: 429/503 after ``Retry-After``, connection errors with
    exponential backoff; at most ``max_retries`` retries and ``max_wait`` s of waiting."""

    def __init__(self, max_retries: int, max_wait: float, method: str, path: str) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.what = f"{method} {path}"
        self.attempt = 0
        self.waited = 0.0

    def _allowed(self, delay: float) -> bool:
        return self.attempt < self.max_retries and self.waited + delay <= self.max_wait

    def _take(self, delay: float, why: str, level: int = logging.WARNING) -> float:
        log.log(
            level,
            "%s: %s; retrying in %.1f s (waited %.1f s, max_wait %.0f s)",
            self.what,
            why,
            delay,
            self.waited,
            self.max_wait,
        )
        self.attempt += 1
        self.waited += delay
        return delay

    def after_error(self, exc: Exception) -> float:
        """Seconds to wait after a connection error; re-raises it when out of budget."""
        delay = _retry_after(None, self.attempt)
        if not self._allowed(delay):
            raise exc
        return self._take(delay, f"{type(exc).__name__}: {exc}", logging.INFO)

    def after_response(self, resp: httpx.Response) -> float | None:
        """Seconds to wait before retrying ``resp``; None: it is the answer (raises
        ``ApiError`` for other 4xx/5xx, ``RateLimitedError`` for a 429/503 out of budget)."""
        if resp.status_code not in RETRY_STATUSES:
            _raise_for(resp)
            return None
        delay = _retry_after(resp, self.attempt)
        if not self._allowed(delay):
            raise RateLimitedError(
                resp.status_code, _problem(resp), waited=self.waited, retry_after=delay
            )
        return self._take(delay, f"HTTP {resp.status_code}")


def _looks_like_path(text: str) -> bool:
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    return text.lower().endswith((".pdb", ".ent")) or any(s in text for s in seps)


def _pdb_text(pdb: str | os.PathLike[str]) -> str:
    """The PDB text to upload: a path (``os.PathLike``, or a one-line string naming a file) is
    read; only multi-line text is PDB content. A string that looks like a path (ends in .pdb
    or has a path separator) but names no file raises FileNotFoundError, instead of being
    sent as PDB text."""
    if isinstance(pdb, os.PathLike):
        return Path(pdb).read_text()
    text = str(pdb)
    if "\n" in text.strip():
        return text
    name = text.strip()
    if name and Path(name).is_file():
        return Path(name).read_text()
    if _looks_like_path(name):
        raise FileNotFoundError(errno.ENOENT, "no such PDB file", name)
    raise ValueError(
        f"{name[:80]!r} is neither an existing file nor PDB text (PDB text has several lines)"
    )


def _list_params(status, kind, cursor, limit) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if kind:
        params["kind"] = kind
    if cursor:
        params["cursor"] = cursor
    return params


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


def _endpoint(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """(base URL without a trailing slash, API key): arguments, else $BOLTZGEN_URL and
    $BOLTZGEN_API_KEY, else the local default URL and no key."""
    url = (base_url or os.environ.get("BOLTZGEN_URL") or DEFAULT_URL).rstrip("/")
    return url, api_key or os.environ.get("BOLTZGEN_API_KEY")


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
        max_wait: float = DEFAULT_MAX_WAIT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url, self.api_key = _endpoint(base_url, api_key)
        self.max_retries = max_retries
        self.max_wait = max_wait
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
        """One API call with retries (429/503 after Retry-After; connection errors), at most
        ``max_retries`` of them and ``max_wait`` s of waiting; each wait is logged."""
        retry = _Retry(self.max_retries, self.max_wait, method, path)
        while True:
            try:
                resp = self.http.request(method, path, **kwargs)
            except _TRANSIENT as exc:
                delay = retry.after_error(exc)
            else:
                delay = retry.after_response(resp)
                if delay is None:
                    return resp
            time.sleep(delay)

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
        forcefield: tuple[str, ...] | list[str] = DEFAULT_FORCEFIELD,
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
        params = _list_params(status, kind, cursor, limit)
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
    def list_keys(self) -> list[KeyInfo]:
        """Admin only: every API key (ids, names, revoked flags; never the plaintext)."""
        return [KeyInfo.model_validate(k) for k in self.request("GET", "/v1/keys").json()]

    def revoke_key(self, key_id: str) -> None:
        """Admin only: revoke a key; it is refused from the next request on."""
        self.request("DELETE", f"/v1/keys/{key_id}")

    def create_key(self, name: str = "") -> KeyInfo:
        """Admin only: a new API key (``.key`` holds the plaintext, shown once)."""
        return KeyInfo.model_validate(self._post("/v1/keys", {"name": name}, None).json())

    # ------------------------------------------------------------ one-call workflows
    def run(
        self,
        pdb: str | os.PathLike[str] | None = None,
        *,
        system_id: str | None = None,
        solvent: str = "vacuum",
        temperature: float = 300.0,
        forcefield: tuple[str, ...] | list[str] = DEFAULT_FORCEFIELD,
        budget_minutes: float | None = None,
        cvs: list[str] | None = None,
        wait: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        **params: Any,
    ) -> JobInfo:
        """The ``pipeline`` job (``boltzgen run`` on the server): upload ``pdb`` (or reuse
        ``system_id``) and submit; further keyword arguments are PipelineConfig fields
        (e.g. ``refine=False``, ``n_samples=20000``). With ``wait=True`` blocks until the job
        ends. Artifacts: report.md, summary.json, model.pt, samples.h5, plots."""
        if (pdb is None) == (system_id is None):
            raise ValueError("give exactly one of pdb and system_id")
        if system_id is None:
            system_id = self.upload_system(
                pdb, forcefield=forcefield, solvent=solvent, temperature=temperature
            ).id
        body: dict[str, Any] = dict(params)
        if budget_minutes is not None:
            body["budget_minutes"] = budget_minutes
        if cvs is not None:
            body["cvs"] = list(cvs)
        return self._submit_and_wait("pipeline", system_id, body, wait, timeout, idempotency_key)

    def cg_train(
        self,
        system_id: str,
        data: str,
        *,
        beads: str | list[int] | None = None,
        reference: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        **config: Any,
    ) -> JobInfo:
        """The ``cg_train`` job: a CG force field from the all-atom MD artifact ``data`` (an
        artifact id) of the system ``system_id``; keyword arguments are CGConfig options
        (e.g. ``method="flow"``, ``n_walkers=100``). Artifacts: forcefield.pt, cg_traj.h5,
        metrics.json, fes.png, summary.json."""
        params = {"data": data, "beads": beads, "reference": reference, "config": config}
        return self._submit_and_wait("cg_train", system_id, params, wait, timeout, idempotency_key)

    def cg_simulate(
        self,
        system_id: str,
        data: str,
        forcefield: str,
        *,
        beads: str | list[int] | None = None,
        reference: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        **config: Any,
    ) -> JobInfo:
        """The ``cg_simulate`` job: CG MD with ``forcefield`` (the artifact id of a cg_train
        job's forcefield.pt), started at and scored against the MD artifact ``data``."""
        params = {"data": data, "forcefield": forcefield, "beads": beads}
        params |= {"reference": reference, "config": config}
        return self._submit_and_wait(
            "cg_simulate", system_id, params, wait, timeout, idempotency_key
        )

    def _submit_and_wait(self, kind, system_id, params, wait, timeout, idempotency_key):
        job = self.submit(kind, system_id=system_id, params=params, idempotency_key=idempotency_key)
        return self.wait(job.id, timeout=timeout) if wait else job


class AsyncClient:
    """``Client``'s methods as coroutines (httpx.AsyncClient), with the same names and
    parameters (``aclose`` for ``close``; ``async with``). The request plumbing, uploads,
    submits, job reads, ``iter_jobs``/``events`` (async iterators) and ``wait`` are native
    async. Every other public method of ``Client`` is mirrored at import time
    (``_mirror_client``): it runs in a worker thread on a synchronous ``Client`` with the same
    settings, so a method added to ``Client`` gets its async counterpart with no second copy
    (``tests/test_client_parity.py`` fails if the two classes drift apart)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        max_wait: float = DEFAULT_MAX_WAIT,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.base_url, self.api_key = _endpoint(base_url, api_key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        kwargs: dict[str, Any] = {"limits": limits} if limits is not None else {}
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(self.api_key),
            timeout=timeout,
            transport=transport,
            **kwargs,
        )
        # the synchronous twin for mirrored methods (a MockTransport serves both)
        self._sync_transport = transport if isinstance(transport, httpx.BaseTransport) else None
        self._sync: Client | None = None

    def _sync_client(self) -> Client:
        if self._sync is None:
            self._sync = Client(
                self.base_url,
                self.api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
                max_wait=self.max_wait,
                transport=self._sync_transport,
            )
        return self._sync

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._sync is not None:
            self._sync.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ plumbing
    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries (see ``Client.request``)."""
        retry = _Retry(self.max_retries, self.max_wait, method, path)
        while True:
            try:
                resp = await self.http.request(method, path, **kwargs)
            except _TRANSIENT as exc:
                delay = retry.after_error(exc)
            else:
                delay = retry.after_response(resp)
                if delay is None:
                    return resp
            await asyncio.sleep(delay)

    async def _post(self, path: str, body: Any, idempotency_key: str | None) -> httpx.Response:
        key = idempotency_key or str(uuid.uuid4())
        return await self.request("POST", path, json=body, headers={"Idempotency-Key": key})

    # ------------------------------------------------------------ systems and jobs
    async def upload_system(
        self,
        pdb: str | os.PathLike[str],
        *,
        name: str | None = None,
        forcefield: tuple[str, ...] | list[str] = DEFAULT_FORCEFIELD,
        solvent: str = "vacuum",
        temperature: float = 300.0,
        constraints: str | None = None,
        idempotency_key: str | None = None,
    ) -> SystemInfo:
        body = _system_body(pdb, name, forcefield, solvent, temperature, constraints)
        resp = await self._post("/v1/systems", body, idempotency_key)
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
        resp = await self._post("/v1/jobs", body, idempotency_key)
        return JobInfo.model_validate(resp.json())

    async def get_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate((await self.request("GET", f"/v1/jobs/{job_id}")).json())

    async def list_jobs(
        self,
        status: str | list[str] | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        params = _list_params(status, kind, cursor, limit)
        return JobPage.model_validate((await self.request("GET", "/v1/jobs", params=params)).json())

    async def iter_jobs(
        self, status=None, kind=None, page_size: int = 100
    ) -> AsyncIterator[JobInfo]:
        """All jobs, newest first, following the cursor (``async for``)."""
        cursor = None
        while True:
            page = await self.list_jobs(status, kind, cursor, page_size)
            for job in page.items:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> JobInfo:
        resp = await self.request("POST", f"/v1/jobs/{job_id}/cancel")
        return JobInfo.model_validate(resp.json())

    async def events(
        self, job_id: str, last_event_id: str | int | None = None
    ) -> AsyncIterator[dict]:
        """The job's server-sent events until it ends (``async for``)."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        async with self.http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                _raise_for(resp)
            lines = [line async for line in resp.aiter_lines()]
        for event in parse_sse(iter(lines)):
            yield event

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        progress: bool | Callable[[JobInfo], None] = False,
        poll: float | None = None,
        raise_on_failure: bool = True,
    ) -> JobInfo:
        """Poll until the job ends (see ``Client.wait``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if progress is True:
            from tqdm.auto import tqdm

            bar = tqdm(total=1.0, desc=job_id, unit="job", bar_format="{l_bar}{bar}| {postfix}")
        try:
            while True:
                resp = await self.request("GET", f"/v1/jobs/{job_id}")
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
                await asyncio.sleep(poll if poll is not None else min(_retry_after(resp, 0), 2.0))
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure and job.status != "succeeded":
            raise JobFailedError(job)
        return job

    async def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        data = (await self.request("GET", f"/v1/jobs/{job_id}/artifacts")).json()
        return ArtifactList.model_validate(data).items


# Client methods that AsyncClient has under another name or must not mirror.
_NOT_MIRRORED = {"close"}


def public_methods(cls: type) -> dict[str, Any]:
    """The public methods of a client class (name -> function)."""
    return {
        name: fn
        for name in dir(cls)
        if not name.startswith("_") and inspect.isfunction(fn := getattr(cls, name))
    }


def _mirrored(name: str, sync_fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(sync_fn)
    async def method(self: AsyncClient, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(self._sync_client(), name)
        return await asyncio.to_thread(bound, *args, **kwargs)

    method.__doc__ = (
        f"``Client.{name}`` as a coroutine (runs in a worker thread).\n\n{sync_fn.__doc__ or ''}"
    )
    return method


def _mirror_client(sync_cls: type = Client, async_cls: type = AsyncClient) -> list[str]:
    """Give ``async_cls`` a coroutine for every public method of ``sync_cls`` it lacks;
    returns their names. Generators are not mirrored (they need a native async iterator)."""
    added = []
    for name, fn in public_methods(sync_cls).items():
        if name in _NOT_MIRRORED or name in vars(async_cls) or inspect.isgeneratorfunction(fn):
            continue
        setattr(async_cls, name, _mirrored(name, fn))
        added.append(name)
    return added


_mirror_client()
