"""``AsyncClient``: ``Client``'s methods as coroutines (httpx.AsyncClient), written natively,
with the same names and parameters (``aclose`` for ``close``; ``async with``); ``iter_jobs``
and ``events`` are async iterators. ``tests/test_client_parity.py`` fails if the two classes
drift apart. Blocking file work (reading a PDB, writing a download, ``mdtraj.load``) runs in a
worker thread."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from boltzgen.client.errors import ApiError, JobFailedError, raise_for
from boltzgen.client.retries import DEFAULT_MAX_WAIT, TRANSIENT, Retry, next_delay, retry_after
from boltzgen.client.wire import (
    auth_headers,
    endpoint,
    job_body,
    list_params,
    parse_sse,
    system_body,
)
from boltzgen.constants import DEFAULT_FORCEFIELD
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

    async def _get(self, path: str, **kwargs: Any) -> Any:
        return (await self.request("GET", path, **kwargs)).json()

    async def _post(self, path: str, body: Any, idempotency_key: str | None) -> httpx.Response:
        key = idempotency_key or str(uuid.uuid4())
        return await self.request("POST", path, json=body, headers={"Idempotency-Key": key})

    # ------------------------------------------------------------ ops
    async def health(self) -> dict[str, Any]:
        return await self._get("/healthz")

    async def kinds(self) -> list[KindInfo]:
        return [KindInfo.model_validate(k) for k in await self._get("/v1/kinds")]

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
        body = await asyncio.to_thread(
            system_body, pdb, name, forcefield, solvent, temperature, constraints
        )
        resp = await self._post("/v1/systems", body, idempotency_key)
        return SystemInfo.model_validate(resp.json())

    async def get_system(self, system_id: str) -> SystemInfo:
        return SystemInfo.model_validate(await self._get(f"/v1/systems/{system_id}"))

    async def list_systems(self, cursor: str | None = None, limit: int = 50) -> SystemPage:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return SystemPage.model_validate(await self._get("/v1/systems", params=params))

    async def delete_system(self, system_id: str) -> None:
        await self.request("DELETE", f"/v1/systems/{system_id}")

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
        body = job_body(kind, system_id, model_id, params, max_attempts)
        resp = await self._post("/v1/jobs", body, idempotency_key)
        return JobInfo.model_validate(resp.json())

    async def get_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(await self._get(f"/v1/jobs/{job_id}"))

    async def list_jobs(
        self,
        status: str | list[str] | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        params = list_params(status, kind, cursor, limit)
        return JobPage.model_validate(await self._get("/v1/jobs", params=params))

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

    async def delete_job(self, job_id: str) -> None:
        await self.request("DELETE", f"/v1/jobs/{job_id}")

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
                await asyncio.sleep(poll if poll is not None else min(retry_after(resp, 0), 2.0))
        finally:
            if bar is not None:
                bar.close()
        if raise_on_failure and job.status != "succeeded":
            raise JobFailedError(job)
        return job

    # ------------------------------------------------------------ artifacts and models
    async def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        return ArtifactList.model_validate(await self._get(f"/v1/jobs/{job_id}/artifacts")).items

    async def artifact(self, job_id: str, name: str) -> ArtifactInfo:
        for a in await self.artifacts(job_id):
            if a.name == name:
                return a
        raise ApiError(404, {"title": "Not Found", "detail": f"job {job_id} has no {name!r}"})

    async def download(
        self, artifact: str | ArtifactInfo, dest: str | os.PathLike[str] | None = None
    ) -> Path:
        """Stream an artifact to ``dest`` (see ``Client.download``)."""
        info = (
            artifact if isinstance(artifact, ArtifactInfo) else await self._artifact_info(artifact)
        )
        dest = Path(dest) if dest is not None else Path(Path(info.name).name)
        if dest.is_dir():
            dest = dest / Path(info.name).name
        await self._stream_to(f"/v1/artifacts/{info.id}/content", dest)
        return dest

    async def _artifact_info(self, artifact_id: str) -> ArtifactInfo:
        return ArtifactInfo.model_validate(await self._get(f"/v1/artifacts/{artifact_id}"))

    async def _stream_to(self, path: str, dest: Path) -> None:
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(self.max_retries + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                async with self.http.stream("GET", path, headers=headers) as resp:
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
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return ModelPage.model_validate(await self._get("/v1/models", params=params))

    async def get_model(self, model_id: str) -> ModelInfo:
        return ModelInfo.model_validate(await self._get(f"/v1/models/{model_id}"))

    async def download_model(self, model_id: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        await self._stream_to(f"/v1/models/{model_id}/content", dest)
        return dest

    # ------------------------------------------------------------ admin
    async def list_keys(self) -> list[KeyInfo]:
        """Admin only: every API key (never the plaintext)."""
        return [KeyInfo.model_validate(k) for k in await self._get("/v1/keys")]

    async def revoke_key(self, key_id: str) -> None:
        """Admin only: revoke a key."""
        await self.request("DELETE", f"/v1/keys/{key_id}")

    async def create_key(self, name: str = "") -> KeyInfo:
        """Admin only: a new API key (``.key`` holds the plaintext, shown once)."""
        return KeyInfo.model_validate((await self._post("/v1/keys", {"name": name}, None)).json())

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
        if (pdb is None) == (system_id is None):
            raise ValueError("give exactly one of pdb and system_id")
        if system_id is None:
            system = await self.upload_system(
                pdb, forcefield=forcefield, solvent=solvent, temperature=temperature
            )
            system_id = system.id
        body: dict[str, Any] = dict(params)
        if budget_minutes is not None:
            body["budget_minutes"] = budget_minutes
        if cvs is not None:
            body["cvs"] = list(cvs)
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
        params = {"data": data, "beads": beads, "reference": reference, "config": config}
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
        params = {"data": data, "forcefield": forcefield, "beads": beads}
        params |= {"reference": reference, "config": config}
        return await self._submit_and_wait(
            "cg_simulate", system_id, params, wait, timeout, idempotency_key
        )

    async def _submit_and_wait(self, kind, system_id, params, wait, timeout, idempotency_key):
        job = await self.submit(
            kind, system_id=system_id, params=params, idempotency_key=idempotency_key
        )
        return await self.wait(job.id, timeout=timeout) if wait else job
