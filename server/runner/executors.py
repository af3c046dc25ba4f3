"""Executors run one job attempt given its job directory (``boltzgen.jobs.run_job_dir``).

``LocalExecutor``: one OS process per job (``python -m boltzgen.jobs``), own process group,
killed with SIGTERM then SIGKILL on cancel. ``RayExecutor``: one Ray task per job with CPU/GPU
requests, killed with ``ray.cancel(force=True)``. Both report only an exit code; progress and
results travel through files in the job directory, so the worker pool treats them alike.
Exit codes: 0 succeeded, 3 failed (bad input, not retryable), anything else crashed/retryable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from boltzgen.jobs import JobKind


class Handle(Protocol):
    def poll(self) -> int | None: ...
    def kill(self) -> None: ...


class Executor(Protocol):
    name: str

    def launch(self, jobdir: Path, checkpoint_dir: Path, kind: JobKind) -> Handle: ...
    def close(self) -> None: ...


class _ProcessHandle:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self, grace: float = 3.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


class LocalExecutor:
    """One subprocess per job on this host."""

    name = "local"

    def __init__(self, settings) -> None:
        self.settings = settings

    def launch(self, jobdir: Path, checkpoint_dir: Path, kind: JobKind) -> _ProcessHandle:
        env = dict(os.environ)
        env.update(
            BOLTZGEN_JOB_WATCH_PARENT="1",
            BOLTZGEN_JOB_MODULES=self.settings.job_modules,
            BOLTZGEN_JOB_THREADS=str(self.settings.job_threads),
            OMP_NUM_THREADS=str(self.settings.job_threads),
            OPENMM_CPU_THREADS=str(self.settings.job_threads),
        )
        with open(jobdir / "log.txt", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "boltzgen.jobs", str(jobdir), str(checkpoint_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        (jobdir / "pid").write_text(str(proc.pid))
        return _ProcessHandle(proc)

    def close(self) -> None:
        pass


def _ray_run(jobdir: str, checkpoint_dir: str) -> int:
    """The Ray task: run the job in this Ray worker; returns the exit code."""
    import torch

    from boltzgen.jobs import load_plugins, run_job_dir

    torch.set_num_threads(int(os.environ.get("BOLTZGEN_JOB_THREADS", "1")))
    load_plugins()
    outcome = run_job_dir(jobdir, checkpoint_dir)
    if outcome["status"] == "succeeded":
        return 0
    return 1 if outcome.get("retryable") else 3


class _RayHandle:
    def __init__(self, ray, ref) -> None:
        self.ray = ray
        self.ref = ref

    def poll(self) -> int | None:
        ready, _ = self.ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(self.ref))
        except Exception:  # cancelled, worker crashed, task error
            return 1

    def kill(self) -> None:
        self.ray.cancel(self.ref, force=True)
        with contextlib.suppress(Exception):
            self.ray.wait([self.ref], timeout=10)


class RayExecutor:
    """One Ray task per job. ``BOLTZGEN_RAY_ADDRESS`` (e.g. ``ray://head:10001`` or ``auto``)
    joins a cluster; unset starts a local Ray instance. Kinds with ``gpu=True`` request
    ``ray_gpus_per_job`` GPUs. Job directories must be on storage all nodes see."""

    name = "ray"

    def __init__(self, settings, **init_kwargs) -> None:
        import ray

        self.ray = ray
        self.settings = settings
        if not ray.is_initialized():
            env = {
                "BOLTZGEN_JOB_MODULES": settings.job_modules,
                "BOLTZGEN_JOB_THREADS": str(settings.job_threads),
                "OMP_NUM_THREADS": str(settings.job_threads),
                "OPENMM_CPU_THREADS": str(settings.job_threads),
            }
            ray.init(
                address=settings.ray_address,
                ignore_reinit_error=True,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": env},
                **init_kwargs,
            )
        self._task = ray.remote(max_retries=0)(_ray_run)

    def launch(self, jobdir: Path, checkpoint_dir: Path, kind: JobKind) -> _RayHandle:
        gpus = self.settings.ray_gpus_per_job if kind.gpu else 0
        ref = self._task.options(num_cpus=self.settings.ray_cpus_per_job, num_gpus=gpus).remote(
            str(jobdir), str(checkpoint_dir)
        )
        return _RayHandle(self.ray, ref)

    def close(self) -> None:
        pass


def make_executor(settings) -> Executor:
    if settings.executor == "ray":
        return RayExecutor(settings)
    if settings.executor == "local":
        return LocalExecutor(settings)
    raise ValueError(f"executor {settings.executor!r} cannot run jobs")
