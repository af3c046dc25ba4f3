"""``AsyncClient``: ``Client``'s methods as coroutines (httpx.AsyncClient), written natively,
with the same names and parameters (``aclose`` for ``close``; ``async with``); ``iter_jobs``
and ``events`` are async iterators. ``tests/test_client_parity.py`` fails if the two classes
drift apart. Blocking file work (reading a PDB, writing a download, ``mdtraj.load``) runs in a
worker thread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from boltzgen.client import calls
from boltzgen.client.calls import Call
from boltzgen.client.errors import raise_for
from boltzgen.client.retries import DEFAULT_MAX_WAIT, TRANSIENT, Retry, next_delay
from boltzgen.client.wire import auth_headers, endpoint, parse_sse
from boltzgen.constants import DEFAULT_FORCEFIELD
from boltzgen.schemas import (
    ArtifactInfo,
    JobInfo,
    JobPage,
    KeyInfo,
    KindInfo,
    ModelInfo,
    ModelPage,
    SystemInfo,
    SystemPage,
)

T = TypeVar("T")


class AsyncClient:
    """Asynchronous client; see ``Client`` for each method."""

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
        self.base_url, self.api_key = endpoint(base_url, api_key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        kwargs: dict[str, Any] = {"limits": limits} if limits is not None else {}
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=auth_headers(self.api_key),
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

    # ------------------------------------------------------------ plumbing
    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call with retries (see ``Client.request``)."""
        retry = Retry(self.max_retries, self.max_wait, method, path)
        while True:
            try:
                resp = await self.http.request(method, path, **kwargs)
            except TRANSIENT as exc:
                delay = retry.after_error(exc)
            else:
                delay = retry.after_response(resp)
                if delay is None:
                    return resp
            await asyncio.sleep(delay)

    async def _call(self, call: Call[T]) -> T:
        return call.read(await self.request(call.method, call.path, **call.kwargs()))

    # ------------------------------------------------------------ ops
    async def health(self) -> dict[str, Any]:
        return await self._call(calls.health())

    async def kinds(self) -> list[KindInfo]:
        return await self._call(calls.kinds())

    # ------------------------------------------------------------ systems
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
        """Upload a PDB (see ``Client.upload_system``); a path is read in a worker thread."""
        call = await asyncio.to_thread(
            calls.upload_system,
            pdb,
            name,
            forcefield,
            solvent,
            temperature,
            constraints,
            idempotency_key,
        )
        return await self._call(call)

    async def get_system(self, system_id: str) -> SystemInfo:
        return await self._call(calls.get_system(system_id))

    async def list_systems(self, cursor: str | None = None, limit: int = 50) -> SystemPage:
        return await self._call(calls.list_systems(cursor, limit))

    async def delete_system(self, system_id: str) -> None:
        await self._call(calls.delete_system(system_id))

    # ------------------------------------------------------------ jobs
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
        """Submit a job (see ``Client.submit``)."""
        return await self._call(
            calls.submit(kind, system_id, model_id, params, max_attempts, idempotency_key)
        )

    async def get_job(self, job_id: str) -> JobInfo:
        return await self._call(calls.get_job(job_id))

    async def list_jobs(
        self,
        status: str | list[str] | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        return await self._call(calls.list_jobs(status, kind, cursor, limit))

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
        return await self._call(calls.cancel(job_id))

    async def delete_job(self, job_id: str) -> None:
        await self._call(calls.delete_job(job_id))

    async def events(
        self, job_id: str, last_event_id: str | int | None = None
    ) -> AsyncIterator[dict]:
        """The job's server-sent events until it ends (``async for``)."""
        headers = calls.events_headers(last_event_id)
        async with self.http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise_for(resp)
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
        watch = calls.Watch(job_id, timeout, progress, poll)
        try:
            while (delay := watch.see(await self.request("GET", f"/v1/jobs/{job_id}"))) is not None:
                await asyncio.sleep(delay)
        finally:
            watch.close()
        return watch.outcome(raise_on_failure)

    # ------------------------------------------------------------ artifacts and models
    async def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        return await self._call(calls.artifacts(job_id))

    async def artifact(self, job_id: str, name: str) -> ArtifactInfo:
        return calls.named_artifact(await self.artifacts(job_id), job_id, name)

    async def download(
        self, artifact: str | ArtifactInfo, dest: str | os.PathLike[str] | None = None
    ) -> Path:
        """Stream an artifact to ``dest`` (see ``Client.download``)."""
        info = (
            artifact if isinstance(artifact, ArtifactInfo) else await self._artifact_info(artifact)
        )
        path = calls.download_path(info, dest)
        await self._stream_to(f"/v1/artifacts/{info.id}/content", path)
        return path

    async def _artifact_info(self, artifact_id: str) -> ArtifactInfo:
        return await self._call(calls.artifact_info(artifact_id))

    async def _stream_to(self, path: str, dest: Path) -> None:
        part = calls.partial_file(dest)
        for attempt in range(self.max_retries + 1):
            try:
                async with self.http.stream(
                    "GET", path, headers=calls.resume_headers(part)
                ) as resp:
                    if resp.status_code == 416:  # already complete
                        break
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise_for(resp)
                    mode = "ab" if resp.status_code == 206 else "wb"
                    with open(part, mode) as fh:  # noqa: ASYNC230 -- local file, chunks of 1 MiB
                        async for chunk in resp.aiter_bytes(1 << 20):
                            fh.write(chunk)
                break
            except TRANSIENT:
                if (delay := next_delay(attempt, self.max_retries, None)) is None:
                    raise
                await asyncio.sleep(delay)
        os.replace(part, dest)

    async def load_trajectory(self, job_or_artifact: str, name: str | None = None):
        """Download an HDF5 artifact into an ``mdtraj.Trajectory`` (see
        ``Client.load_trajectory``)."""
        import tempfile

        import mdtraj

        info = (
            await self.artifact(job_or_artifact, name)
            if name is not None
            else await self._artifact_info(job_or_artifact)
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = await self.download(info, Path(tmp) / Path(info.name).name)
            return await asyncio.to_thread(mdtraj.load, str(path))

    async def list_models(self, cursor: str | None = None, limit: int = 50) -> ModelPage:
        return await self._call(calls.list_models(cursor, limit))

    async def get_model(self, model_id: str) -> ModelInfo:
        return await self._call(calls.get_model(model_id))

    async def download_model(self, model_id: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        await self._stream_to(f"/v1/models/{model_id}/content", dest)
        return dest

    # ------------------------------------------------------------ admin
    async def list_keys(self) -> list[KeyInfo]:
        """Admin only: every API key (never the plaintext)."""
        return await self._call(calls.list_keys())

    async def revoke_key(self, key_id: str) -> None:
        """Admin only: revoke a key."""
        await self._call(calls.revoke_key(key_id))

    async def create_key(self, name: str = "") -> KeyInfo:
        """Admin only: a new API key (``.key`` holds the plaintext, shown once)."""
        return await self._call(calls.create_key(name))

    # ------------------------------------------------------------ one-call workflows
    async def run(
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
        """The ``pipeline`` job (see ``Client.run``)."""
        body = calls.pipeline_params(pdb, system_id, budget_minutes, cvs, params)
        if system_id is None:
            system = await self.upload_system(
                pdb, forcefield=forcefield, solvent=solvent, temperature=temperature
            )
            system_id = system.id
        return await self._submit_and_wait(
            "pipeline", system_id, body, wait, timeout, idempotency_key
        )

    async def cg_train(
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
        """The ``cg_train`` job (see ``Client.cg_train``)."""
        params = calls.cg_params(data, beads, reference, config)
        return await self._submit_and_wait(
            "cg_train", system_id, params, wait, timeout, idempotency_key
        )

    async def cg_simulate(
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
        """The ``cg_simulate`` job (see ``Client.cg_simulate``)."""
        params = calls.cg_params(data, beads, reference, config, forcefield)
        return await self._submit_and_wait(
            "cg_simulate", system_id, params, wait, timeout, idempotency_key
        )

    async def _submit_and_wait(self, kind, system_id, params, wait, timeout, idempotency_key):
        job = await self.submit(
            kind, system_id=system_id, params=params, idempotency_key=idempotency_key
        )
        return await self.wait(job.id, timeout=timeout) if wait else job
