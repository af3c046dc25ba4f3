"""The job protocol: how an executor runs one job through a directory.

``jobdir/job.json`` (``{"kind", "params"}``) in; ``jobdir/work/`` (artifacts),
``jobdir/progress.jsonl`` (throttled progress lines) and ``jobdir/result.json`` (the outcome)
out; ``checkpoint_dir`` (default ``jobdir/checkpoint``) survives a crash and is handed to the
next attempt. A local subprocess (``python -m boltzgen.jobs JOBDIR [CHECKPOINT_DIR]``) and a Ray
task run the same code. A :class:`~boltzgen.errors.BoltzgenError` is bad input and is not
retried; any other exception is. With ``BOLTZGEN_JOB_WATCH_PARENT=1`` a watchdog ends the job
when its parent (the worker) dies, so a killed worker leaves no orphan jobs.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from boltzgen.errors import BoltzgenError
from boltzgen.jobs.registry import get_kind, validate_params

__all__ = [
    "RESULT_MODEL_FILE",
    "ProgressWriter",
    "job_dir_paths",
    "main",
    "run_job_dir",
    "watch_parent",
    "write_json_atomic",
]

#: A result key naming a file in ``workdir`` that the service registers as a reusable model.
RESULT_MODEL_FILE = "model_file"


class ProgressWriter:
    """Append-only JSON-lines progress log, throttled to a few lines per second."""

    def __init__(self, path: Path, min_interval: float = 0.2) -> None:
        self.path = path
        self.min_interval = min_interval
        self._last = 0.0
        self._pending: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        with self._lock:
            self._pending = (fraction, str(message)[:500])
            now = time.monotonic()
            if now - self._last >= self.min_interval or fraction >= 1.0:
                self._flush(now)

    def _flush(self, now: float) -> None:
        if self._pending is None:
            return
        fraction, message = self._pending
        line = json.dumps({"t": time.time(), "progress": fraction, "message": message})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
        self._pending = None
        self._last = now

    def close(self) -> None:
        with self._lock:
            self._flush(time.monotonic())


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def job_dir_paths(jobdir: Path) -> dict[str, Path]:
    """The files of the directory protocol under ``jobdir``."""
    jobdir = Path(jobdir)
    return {
        "job": jobdir / "job.json",
        "work": jobdir / "work",
        "checkpoint": jobdir / "checkpoint",
        "progress": jobdir / "progress.jsonl",
        "result": jobdir / "result.json",
    }


def run_job_dir(jobdir: str | Path, checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the job described by ``jobdir/job.json`` (``{"kind", "params"}``).

    Writes artifacts to ``jobdir/work``, progress lines to ``jobdir/progress.jsonl`` and the
    outcome to ``jobdir/result.json``: ``{"status": "succeeded", "result": {...}}`` or
    ``{"status": "failed", "retryable": bool, "error": {"type", "message"}}``. A BoltzgenError
    (bad input) is not retryable; any other exception is. Returns the outcome.
    """
    paths = job_dir_paths(Path(jobdir))
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else paths["checkpoint"]
    paths["work"].mkdir(parents=True, exist_ok=True)
    ckpt.mkdir(parents=True, exist_ok=True)
    progress = ProgressWriter(paths["progress"])
    try:
        spec = json.loads(paths["job"].read_text())
        kind = get_kind(spec["kind"])
        params = validate_params(kind, spec.get("params", {}))
        result = kind.run(params, paths["work"], progress, ckpt)
        json.dumps(result)  # must be JSON-able
        outcome: dict[str, Any] = {"status": "succeeded", "result": result}
    except BoltzgenError as exc:
        outcome = {
            "status": "failed",
            "retryable": False,
            "error": {"type": type(exc).__name__, "message": str(exc)},
        }
    except Exception as exc:
        outcome = {
            "status": "failed",
            "retryable": True,
            "error": {
                "type": type(exc).__name__,
                "message": str(exc) or type(exc).__name__,
                "traceback": traceback.format_exc(limit=20),
            },
        }
    finally:
        progress.close()
    write_json_atomic(paths["result"], outcome)
    return outcome


def watch_parent(interval: float = 1.0) -> None:
    """Exit this process when its parent dies (a killed worker must not leave orphan jobs)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    """``python -m boltzgen.jobs JOBDIR [CHECKPOINT_DIR]``: run one job (used by executors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or len(argv) > 2:
        print("usage: python -m boltzgen.jobs JOBDIR [CHECKPOINT_DIR]", file=sys.stderr)
        return 2
    if os.environ.get("BOLTZGEN_JOB_WATCH_PARENT") == "1":
        watch_parent()
    import torch

    torch.set_num_threads(int(os.environ.get("BOLTZGEN_JOB_THREADS", "1")))
    outcome = run_job_dir(argv[0], argv[1] if len(argv) > 1 else None)
    if outcome["status"] == "succeeded":
        return 0
    return 1 if outcome.get("retryable") else 3
