"""Job kind ``simulate``: Langevin MD of a system, checkpointed in chunks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from boltzgen.jobs.params import PlatformName, SystemParams
from boltzgen.jobs.protocol import write_json_atomic
from boltzgen.jobs.registry import ProgressFn, job_kind


class SimulateParams(SystemParams):
    """Langevin MD of a system (``boltzgen.simulate``), checkpointed in chunks."""

    n_steps: int = Field(gt=0, le=500_000_000, description="MD steps")
    timestep: float = Field(0.002, gt=0.0, le=0.01, description="ps")
    report_interval: int = Field(100, gt=0, description="steps between saved frames")
    seed: int = Field(0, ge=0)
    platform: PlatformName = "auto"
    checkpoint_interval: int | None = Field(
        None,
        gt=0,
        description="steps between checkpoints (rounded to a multiple of report_interval); "
        "default: n_steps / 10, at least 10000",
    )

    @model_validator(mode="after")
    def _check(self) -> SimulateParams:
        if self.report_interval > self.n_steps:
            raise ValueError(
                f"report_interval ({self.report_interval}) exceeds n_steps ({self.n_steps})"
            )
        if self.n_steps % self.report_interval:
            raise ValueError(
                f"n_steps ({self.n_steps}) must be a multiple of report_interval "
                f"({self.report_interval})"
            )
        return self


@job_kind("simulate", SimulateParams)
def simulate(
    params: SimulateParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Run MD and write trajectory.h5 (mdtraj HDF5 with per-frame energies and forces).

    MD in chunks of ``checkpoint_interval`` steps, each saved to ``checkpoint_dir`` before
    the next starts; a resumed attempt skips the saved chunks. Chunk k > 0 starts from the last
    frame of chunk k-1 with velocities drawn afresh at T (seed ``seed``, chunk k): a valid move
    for Langevin dynamics, and the same whether or not the job was interrupted, so a resumed
    run reproduces an uninterrupted one on a deterministic platform."""
    from boltzgen.md import SIMULATE_DEFAULTS, TrajectoryWriter, load_md
    from boltzgen.md import simulate as md_simulate

    system = params.load_system()
    n, every = params.n_steps, params.report_interval
    chunk = params.checkpoint_interval or max(n // 10, 10_000)
    chunk = max(every, chunk // every * every)
    state_path = checkpoint_dir / "simulate.json"
    state = {"done": 0, "chunks": []}
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("params") != params.model_dump(exclude={"system"}) or not all(
            (checkpoint_dir / c).exists() for c in state["chunks"]
        ):
            state = {"done": 0, "chunks": []}  # stale or incomplete checkpoint: start over
    resumed_from = state["done"]
    progress(
        state["done"] / n, f"{state['done']}/{n} steps" + (" (resumed)" if resumed_from else "")
    )
    while state["done"] < n:
        k = len(state["chunks"])
        steps = min(chunk, n - state["done"])
        start = None
        if k:
            start = load_md(checkpoint_dir / state["chunks"][-1]).trajectory.xyz[-1]
        tmp = checkpoint_dir / f"chunk-{k:05d}.part.h5"
        base = state["done"]

        def report(done: int, total: int, base: int = base) -> None:
            progress((base + done) / n, f"{base + done}/{n} steps")

        md_simulate(
            system,
            n_steps=steps,
            report_interval=every,
            out=tmp,
            minimize=k == 0,
            langevin=SIMULATE_DEFAULTS.replace(
                timestep=params.timestep, seed=params.seed * 100_003 + k, platform=params.platform
            ),
            positions=start,
            progress=report,
        )
        name = f"chunk-{k:05d}.h5"
        os.replace(tmp, checkpoint_dir / name)
        state = {
            "done": base + steps,
            "chunks": [*state["chunks"], name],
            "params": params.model_dump(exclude={"system"}),
        }
        write_json_atomic(state_path, state)
    out = workdir / "trajectory.h5"
    meta = {
        "temperature_K": system.temperature,
        "timestep_ps": params.timestep,
        "report_interval_steps": every,
        "n_steps": n,
        "seed": params.seed,
        "checkpoint_interval_steps": chunk,
        "integrator": "LangevinMiddleIntegrator",
    }
    writer = TrajectoryWriter(out, system, meta)
    energies = []
    try:
        t0 = 0.0
        for name in state["chunks"]:
            d = load_md(checkpoint_dir / name)
            times = d.time - d.time[0] + t0 + every * params.timestep
            writer.append(d.trajectory.xyz, times, d.potential_energy, d.forces, 0, len(times))
            t0 = times[-1]
            energies.append(d.potential_energy)
    finally:
        writer.close()
    energy = np.concatenate(energies)
    progress(1.0, f"{n}/{n} steps")
    return {
        "n_frames": int(len(energy)),
        "n_steps": n,
        "simulated_ps": n * params.timestep,
        "resumed_from_step": int(resumed_from),
        "n_chunks": len(state["chunks"]),
        "mean_potential_energy_kj_mol": float(energy.mean()),
        "std_potential_energy_kj_mol": float(energy.std()),
        "trajectory": out.name,
    }
