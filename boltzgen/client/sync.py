"""``Client``: the synchronous SDK client (httpx.Client)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
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
        self.base_url, self.api_key = endpoint(base_url, api_key)
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=auth_headers(self.api_key),
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
        retry = Retry(self.max_retries, self.max_wait, method, path)
        while True:
            try:
                resp = self.http.request(method, path, **kwargs)
            except TRANSIENT as exc:
                delay = retry.after_error(exc)
            else:
                delay = retry.after_response(resp)
                if delay is None:
                    return resp
            time.sleep(delay)

    def _call(self, call: Call[T]) -> T:
        return call.read(self.request(call.method, call.path, **call.kwargs()))

    # ------------------------------------------------------------ ops
    def health(self) -> dict[str, Any]:
        return self._call(calls.health())

    def kinds(self) -> list[KindInfo]:
        return self._call(calls.kinds())

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
        return self._call(
            calls.upload_system(
                pdb, name, forcefield, solvent, temperature, constraints, idempotency_key
            )
        )

    def get_system(self, system_id: str) -> SystemInfo:
        return self._call(calls.get_system(system_id))

    def list_systems(self, cursor: str | None = None, limit: int = 50) -> SystemPage:
        return self._call(calls.list_systems(cursor, limit))

    def delete_system(self, system_id: str) -> None:
        self._call(calls.delete_system(system_id))

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
        return self._call(
            calls.submit(kind, system_id, model_id, params, max_attempts, idempotency_key)
        )

    def get_job(self, job_id: str) -> JobInfo:
        return self._call(calls.get_job(job_id))

    def list_jobs(
        self,
        status: str | list[str] | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        return self._call(calls.list_jobs(status, kind, cursor, limit))

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
        return self._call(calls.cancel(job_id))

    def delete_job(self, job_id: str) -> None:
        self._call(calls.delete_job(job_id))

    def events(self, job_id: str, last_event_id: str | int | None = None) -> Iterator[dict]:
        """The job's server-sent events (status/progress) until it ends."""
        headers = calls.events_headers(last_event_id)
        with self.http.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise_for(resp)
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
        watch = calls.Watch(job_id, timeout, progress, poll)
        try:
            while (delay := watch.see(self.request("GET", f"/v1/jobs/{job_id}"))) is not None:
                time.sleep(delay)
        finally:
            watch.close()
        return watch.outcome(raise_on_failure)

    # ------------------------------------------------------------ artifacts and models
    def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        return self._call(calls.artifacts(job_id))

    def artifact(self, job_id: str, name: str) -> ArtifactInfo:
        return calls.named_artifact(self.artifacts(job_id), job_id, name)

    def download(
        self, artifact: str | ArtifactInfo, dest: str | os.PathLike[str] | None = None
    ) -> Path:
        """Stream an artifact to ``dest`` (a file or a directory; default: its name in the
        current directory). A partial ``<dest>.part`` from an interrupted download is resumed
        with a Range request."""
        info = artifact if isinstance(artifact, ArtifactInfo) else self._artifact_info(artifact)
        path = calls.download_path(info, dest)
        self._stream_to(f"/v1/artifacts/{info.id}/content", path)
        return path

    def _artifact_info(self, artifact_id: str) -> ArtifactInfo:
        return self._call(calls.artifact_info(artifact_id))

    def _stream_to(self, path: str, dest: Path) -> None:
        part = calls.partial_file(dest)
        for attempt in range(self.max_retries + 1):
            try:
                with self.http.stream("GET", path, headers=calls.resume_headers(part)) as resp:
                    if resp.status_code == 416:  # already complete
                        break
                    if resp.status_code >= 400:
                        resp.read()
                        raise_for(resp)
                    with open(part, "ab" if resp.status_code == 206 else "wb") as fh:
                        for chunk in resp.iter_bytes(1 << 20):
                            fh.write(chunk)
                break
            except TRANSIENT:
                if (delay := next_delay(attempt, self.max_retries, None)) is None:
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
        return self._call(calls.list_models(cursor, limit))

    def get_model(self, model_id: str) -> ModelInfo:
        return self._call(calls.get_model(model_id))

    def download_model(self, model_id: str, dest: str | os.PathLike[str]) -> Path:
        dest = Path(dest)
        self._stream_to(f"/v1/models/{model_id}/content", dest)
        return dest

    # ------------------------------------------------------------ admin
    def list_keys(self) -> list[KeyInfo]:
        """Admin only: every API key (ids, names, revoked flags; never the plaintext)."""
        return self._call(calls.list_keys())

    def revoke_key(self, key_id: str) -> None:
        """Admin only: revoke a key; it is refused from the next request on."""
        self._call(calls.revoke_key(key_id))

    def create_key(self, name: str = "") -> KeyInfo:
        """Admin only: a new API key (``.key`` holds the plaintext, shown once)."""
        return self._call(calls.create_key(name))

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
        body = calls.pipeline_params(pdb, system_id, budget_minutes, cvs, params)
        if system_id is None:
            system_id = self.upload_system(
                pdb, forcefield=forcefield, solvent=solvent, temperature=temperature
            ).id
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
        params = calls.cg_params(data, beads, reference, config)
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
        params = calls.cg_params(data, beads, reference, config, forcefield)
        return self._submit_and_wait(
            "cg_simulate", system_id, params, wait, timeout, idempotency_key
        )

    def _submit_and_wait(self, kind, system_id, params, wait, timeout, idempotency_key):
        job = self.submit(kind, system_id=system_id, params=params, idempotency_key=idempotency_key)
        return self.wait(job.id, timeout=timeout) if wait else job
