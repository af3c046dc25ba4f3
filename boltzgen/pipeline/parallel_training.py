"""Independent flows trained side by side: flow 0 in this process, flows 1..n-1 each in a
spawned worker process, all at once, so that on a machine with n cores every flow trains for
the whole training share instead of 1/n of it (training is one torch thread per flow; the
flows share nothing but the frames). Each worker runs the same training stage
(:func:`~boltzgen.pipeline.training.train_stage`) into its flow's checkpoint directory and
records it there; the pipeline then finds the flow trained, as on a resume, and samples it.
A worker that fails leaves its stage unfinished, so the flow is trained in this process
afterwards (with less time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from boltzgen.processes import call_result, kill_workers, spawn_call

__all__ = ["ParallelTraining", "train_flow_worker"]


def _quiet(_stage: str, _fraction: float, _message: str) -> None:
    """A worker's stage clock: progress is reported by the flow trained in this process."""


def train_flow_worker(
    system_spec: dict[str, Any],
    config: Any,
    split: dict[str, dict[str, float]],
    ckpt: Path,
    fp: str,
    positions: np.ndarray,
    forces: np.ndarray | None,
    log_w: np.ndarray | None,
    before: float,
) -> dict[str, Any]:
    """Train one flow in a worker process (one torch thread, energies in this process only)
    and record its training stage in ``ckpt``; returns the training record."""
    import torch

    from boltzgen.energy import EnergyModel, fastest_platform
    from boltzgen.pipeline.records import Stages
    from boltzgen.pipeline.training import train_stage
    from boltzgen.systems import System

    torch.set_num_threads(1)
    system = System.from_spec(system_spec)
    energy = EnergyModel(system, platform=fastest_platform(system, config.platform))
    try:
        _, record, _, _ = train_stage(
            system,
            energy,
            config,
            split,
            ckpt,
            Stages(ckpt),
            fp,
            _quiet,
            positions,
            forces,
            log_w,
            before,
        )
    finally:
        energy.close()
    return record


class ParallelTraining:
    """The worker processes training flows 1..n-1 (one each) while this process trains flow 0.

    ``jobs``: per flow k >= 1, the arguments of :func:`train_flow_worker`. :meth:`wait` blocks
    until flow k's worker is done and says whether it succeeded (its error otherwise);
    :meth:`close` kills workers still running (a cancelled or failed run does not wait for
    them)."""

    def __init__(self, jobs: dict[int, tuple]) -> None:
        self._workers = {k: spawn_call(train_flow_worker, *args) for k, args in jobs.items()}

    def has(self, k: int) -> bool:
        """Whether flow k has a worker (a flow trained before, e.g. on a resume, has none)."""
        return k in self._workers

    def wait(self, k: int) -> str | None:
        """None when flow k was trained by its worker, else the worker's error as text."""
        if k not in self._workers:
            return f"flow {k + 1} had no worker"
        status, value = call_result(*self._workers[k])
        return None if status == "ok" else str(value)

    def close(self) -> None:
        kill_workers(list(self._workers.values()))
