"""The worker pool: claims jobs from the queue (``server.storage.queue``), runs each through an
executor, heartbeats the leases, relays progress, kills cancelled jobs, and records the outcome.

Directory layout under ``state_dir/jobs/<job id>/``: ``checkpoint/`` (kept across attempts, so a
crashed job resumes) and ``attempt-<n>/`` (``job.json``, ``work/`` = the artifacts,
``progress.jsonl``, ``result.json``, ``log.txt``). Runs embedded in the server (a thread) or
standalone (``boltzgen worker`` / ``python -m server.runner.worker``), any number of them per store.
A standalone worker touches ``HEALTH_FILE`` after every round; ``python -m server.runner.worker
--healthcheck`` (the container healthcheck) exits 0 while that file is fresh.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boltzgen.errors import BoltzgenError
from boltzgen.jobs import RESULT_MODEL_FILE, get_kind, job_dir_paths, job_kinds, load_plugins
from server.runner.executors import Executor, Handle, make_executor
from server.settings import Settings
from server.storage.layout import job_root, media_type, model_dir
from server.storage.queue import JobQueue
from server.storage.store import Store

log = logging.getLogger("boltzgen.worker")

HEALTH_FILE = Path(tempfile.gettempdir()) / "boltzgen-worker.alive"
HEALTH_MAX_AGE = 60.0  # seconds since the last round before the healthcheck fails


@dataclass
class _Run:
    job: dict[str, Any]
    handle: Handle
    jobdir: Path
    offset: int = 0
    killed_for: str | None = None  # "cancel" | "lease-lost" | "shutdown"
    started: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.job["id"]

    @property
    def attempt(self) -> int:
        return self.job["attempts"]


class WorkerPool:
    """Runs up to ``slots`` jobs at once. ``tick()`` does one round; ``start()`` loops it in a
    daemon thread."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        executor: Executor | None = None,
        slots: int | None = None,
        worker_id: str | None = None,
        health_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.health_file = health_file
        self.store = store
        self.queue = JobQueue(store)
        self.executor = executor or make_executor(settings)
        self.slots = settings.workers if slots is None else slots
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, _Run] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = 0.0
        self._last_reap = 0.0

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.run_forever, name="boltzgen-worker", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_forever(self) -> None:
        # Import every job kind (torch, OpenMM, mdtraj: seconds on a loaded machine) before the
        # first claim: imported on the first launch instead, they delayed the first heartbeat
        # past a short lease, and the job was requeued as if this worker had died.
        job_kinds()
        log.info(
            "worker %s: %d slot(s), executor %s", self.worker_id, self.slots, self.executor.name
        )
        while not self._stop.is_set():
            try:
                self.tick()
                if self.health_file is not None:
                    self.health_file.touch()
            except Exception:
                log.exception("worker tick failed")
            self._stop.wait(self.settings.poll_seconds)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop claiming, kill running jobs and put them back in the queue without counting
        the attempt (not their fault); they resume from their checkpoints elsewhere."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for run in list(self.running.values()):
            run.killed_for = "shutdown"
            run.handle.kill()
            self._pump(run)
            if not self.queue.release(run.id, self.worker_id, run.attempt):
                # cancel was requested meanwhile: record it
                self.queue.finish_attempt(
                    run.id,
                    self.worker_id,
                    run.attempt,
                    {"type": "WorkerShutdown", "message": "the worker shut down"},
                    retryable=False,
                    backoff=0.0,
                )
        self.running.clear()
        self.executor.close()

    # ------------------------------------------------------------ one round
    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_reap >= max(self.settings.poll_seconds, 0.5):
            self._last_reap = now
            for job_id, status in self.queue.reap_expired(
                self.settings.retry_backoff_seconds
            ).items():
                log.warning("job %s: lease expired -> %s", job_id, status)
        # progress, exits
        for run in list(self.running.values()):
            self._pump(run)
            code = run.handle.poll()
            if code is not None:
                self._finish(run, code)
        # cancellations
        if self.running:
            for job_id in self.queue.cancel_flags(list(self.running)):
                run = self.running.get(job_id)
                if run is not None and run.killed_for is None:
                    log.info("job %s: cancel requested, killing", job_id)
                    run.killed_for = "cancel"
                    run.handle.kill()
        # heartbeats
        if self.running and now - self._last_beat >= self.settings.heartbeat_interval:
            self._last_beat = now
            held = self.queue.heartbeat(
                self.worker_id, list(self.running), self.settings.lease_seconds
            )
            for job_id in set(self.running) - held:
                run = self.running.pop(job_id)
                log.warning("job %s: lease lost, killing attempt %d", job_id, run.attempt)
                run.killed_for = "lease-lost"
                run.handle.kill()
        # claims
        while len(self.running) < self.slots and not self._stop.is_set():
            job = self.queue.claim(self.worker_id, self.settings.lease_seconds)
            if job is None:
                break
            self._launch(job)

    def _launch(self, job: dict[str, Any]) -> None:
        root = job_root(self.settings, job["id"])
        jobdir = root / f"attempt-{job['attempts']}"
        ckpt = root / "checkpoint"
        try:
            kind = get_kind(job["kind"])
            paths = job_dir_paths(jobdir)
            paths["work"].mkdir(parents=True, exist_ok=True)
            ckpt.mkdir(parents=True, exist_ok=True)
            paths["job"].write_text(json.dumps({"kind": job["kind"], "params": job["params"]}))
            handle = self.executor.launch(jobdir, ckpt, kind)
        except Exception as exc:
            log.exception("job %s: launch failed", job["id"])
            self.queue.finish_attempt(
                job["id"],
                self.worker_id,
                job["attempts"],
                {"type": type(exc).__name__, "message": f"could not start the job: {exc}"},
                # bad input (e.g. a kind this worker does not know) is never retried
                retryable=not isinstance(exc, BoltzgenError),
                backoff=self.settings.retry_backoff_seconds,
            )
            return
        log.info("job %s (%s): attempt %d started", job["id"], job["kind"], job["attempts"])
        self.running[job["id"]] = _Run(job=job, handle=handle, jobdir=jobdir)

    def _pump(self, run: _Run) -> None:
        path = job_dir_paths(run.jobdir)["progress"]
        try:
            with open(path, "rb") as fh:
                fh.seek(run.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        run.offset += end + 1
        updates = []
        for line in data[: end + 1].splitlines():
            try:
                rec = json.loads(line)
                updates.append((float(rec["progress"]), str(rec.get("message", ""))))
            except (ValueError, KeyError, TypeError):
                continue
        self.queue.record_progress(run.id, self.worker_id, run.attempt, updates)

    def _finish(self, run: _Run, code: int) -> None:
        self.running.pop(run.id, None)
        paths = job_dir_paths(run.jobdir)
        outcome: dict[str, Any] | None = None
        if paths["result"].exists():
            try:
                outcome = json.loads(paths["result"].read_text())
            except ValueError:
                outcome = None
        backoff = self.settings.retry_backoff_seconds
        if outcome is not None and outcome.get("status") == "succeeded" and run.killed_for is None:
            result = outcome.get("result") or {}
            files, model = self._collect(run, result)
            ok = self.queue.complete(run.id, self.worker_id, run.attempt, result, files, model)
            log.info("job %s: succeeded%s", run.id, "" if ok else " (but lease was lost)")
            return
        if outcome is not None and outcome.get("status") == "failed":
            error = outcome.get("error") or {"type": "Error", "message": "job failed"}
            retryable = bool(outcome.get("retryable"))
        elif run.killed_for == "cancel":
            error, retryable = {"type": "Cancelled", "message": "cancelled by request"}, False
        else:
            error = {
                "type": "ProcessCrashed",
                "message": f"the job process exited with code {code} without a result",
            }
            # exit code 3 is the job protocol's "failed on bad input": never retried
            retryable = code != 3
        status = self.queue.finish_attempt(
            run.id, self.worker_id, run.attempt, error, retryable=retryable, backoff=backoff
        )
        log.info("job %s: attempt %d ended (%s) -> %s", run.id, run.attempt, error["type"], status)

    def _collect(
        self, run: _Run, result: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        work = job_dir_paths(run.jobdir)["work"]
        files = []
        for p in sorted(work.rglob("*")):
            if p.is_file():
                files.append(
                    {
                        "name": p.relative_to(work).as_posix(),
                        "path": str(p),
                        "size": p.stat().st_size,
                        "media_type": media_type(p),
                    }
                )
        model = None
        name = result.get(RESULT_MODEL_FILE)
        if name:
            src = work / name
            if src.is_file():
                dst = model_dir(self.settings, run.id) / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                summary = {k: v for k, v in result.items() if k != RESULT_MODEL_FILE}
                model = {
                    "name": f"{run.job['kind']}-{run.id}",
                    "path": str(dst),
                    "size": dst.stat().st_size,
                    "summary": summary,
                }
            else:
                log.warning("job %s: result names model file %r, which is missing", run.id, name)
        return files, model


def main(settings: Settings | None = None) -> None:
    """A standalone worker pool until SIGTERM/SIGINT: ``python -m server.runner.worker`` (settings
    from ``BOLTZGEN_*``) or ``boltzgen worker`` (which passes its own)."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = settings or Settings()
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    if settings.job_modules:
        load_plugins(settings.job_modules)  # the kinds must be known here to launch their jobs
    store = Store(settings.sqlalchemy_url)
    store.create_all()
    pool = WorkerPool(settings, store, slots=max(settings.workers, 1), health_file=HEALTH_FILE)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pool.start()
    stop.wait()
    pool.stop()


def healthcheck(path: Path = HEALTH_FILE, max_age: float = HEALTH_MAX_AGE) -> int:
    """0 if a standalone worker finished a round within ``max_age`` seconds, else 1."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 1
    return 0 if age <= max_age else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--healthcheck"]:
        sys.exit(healthcheck())
    main()
