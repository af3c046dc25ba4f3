"""Langevin MD that writes an mdtraj HDF5 trajectory with per-frame energies and forces.

The file is a normal mdtraj HDF5 trajectory (``mdtraj.load(path)`` opens it): positions
(float32, nm), time (ps) and ``potentialEnergy`` (kJ/mol) in mdtraj's own layout, plus a
``/forces`` array (float32, kJ/mol/nm, same frame order) and ``/boltzgen_system`` (the system
spec as JSON bytes) so the data set can be reloaded with its force field; the format is
:mod:`boltzgen.h5io`'s. The MD itself runs on :class:`boltzgen.simulation.Simulation`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mdtraj
import numpy as np

from boltzgen.errors import InputError, StructureError
from boltzgen.h5io import TrajectoryWriter, read_md
from boltzgen.simulation import (
    FrameRecorder,
    LangevinConfig,
    Simulation,
    langevin_metadata,
    resolve_langevin,
)
from boltzgen.systems import System

__all__ = [
    "SIMULATE_DEFAULTS",
    "MDData",
    "TrajectoryWriter",
    "calibrate_md",
    "concatenate_md",
    "langevin_metadata",
    "load_md",
    "simulate",
]

#: :func:`simulate`'s settings when neither ``langevin`` nor its keywords are given: 2 fs (its
#: documented default since the first release) and OpenMM's default CPU threads.
SIMULATE_DEFAULTS = LangevinConfig(timestep=0.002, threads=None)


@dataclass
class MDData:
    """What :func:`load_md` returns.

    trajectory: mdtraj.Trajectory (positions nm). potential_energy: (n_frames,) kJ/mol.
    forces: (n_frames, n_atoms, 3) kJ/mol/nm (float32). time: (n_frames,) ps.
    metadata: MD settings (temperature, timestep, friction, seed, ...).
    system_spec: dict for :meth:`System.from_spec` (or None if the file has none).
    """

    trajectory: mdtraj.Trajectory
    potential_energy: np.ndarray
    forces: np.ndarray
    time: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    system_spec: dict[str, Any] | None = None

    def system(self) -> System:
        """Rebuild the System the data were generated with."""
        if self.system_spec is None:
            raise StructureError("this MD file carries no system spec")
        return System.from_spec(self.system_spec)


def simulate(
    system: System,
    n_steps: int,
    timestep: float | None = None,
    report_interval: int = 100,
    out: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    friction: float | None = None,
    temperature: float | None = None,
    minimize: bool = True,
    platform: str | None = None,
    platform_properties: dict[str, str] | None = None,
    positions: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    flush_every: int = 1000,
    center: bool = True,
    langevin: LangevinConfig | None = None,
) -> mdtraj.Trajectory:
    """Run Langevin MD (LangevinMiddleIntegrator) and record every ``report_interval`` steps.

    Args:
        system: what to simulate (its constraints setting applies).
        n_steps: number of integration steps; n_steps // report_interval frames are written.
        langevin: the integrator settings (:class:`boltzgen.simulation.LangevinConfig`);
            default :data:`SIMULATE_DEFAULTS` (2 fs, 1/ps, the system's temperature, platform
            "auto", seed 0, OpenMM's default threads). The keywords ``timestep`` (ps),
            ``friction`` (1/ps), ``temperature`` (K), ``seed``, ``platform`` and
            ``platform_properties`` set the same fields (not together with ``langevin``).
            ``platform="auto"`` is the platform measured fastest for the system
            (:func:`boltzgen.openmm_context.fastest_platform`, as the generator's energy model
            uses it); the seed seeds both the initial velocities and the integrator's stream.
        out: HDF5 path (``.h5``); None keeps the trajectory in memory only.
        minimize: minimise the energy before starting.
        positions: start (n_atoms, 3) nm (default: ``system.positions``).
        progress: optional callback ``progress(steps_done, n_steps)``.
        center: store each frame with its centroid at the origin (the molecule diffuses under
            Langevin noise; centring keeps float32 positions precise). Energies and forces do
            not change: without periodic boundaries they are translation invariant.

    Returns: mdtraj.Trajectory of the recorded frames (float32 positions, time in ps).
    """
    # the keywords are documented public API (shared/API.md): accepted without a warning
    cfg = resolve_langevin(
        langevin,
        SIMULATE_DEFAULTS,
        timestep=timestep,
        friction=friction,
        temperature=temperature,
        seed=seed,
        platform=platform,
        platform_properties=platform_properties,
    )
    n_steps, report_interval = int(n_steps), int(report_interval)
    if n_steps < 0 or report_interval < 1:
        raise InputError("n_steps must be >= 0 and report_interval >= 1")
    sim = Simulation(system, cfg)
    center = bool(center) and not sim.periodic
    sim.start(positions, minimize=minimize)
    n_frames = n_steps // report_interval
    metadata = langevin_metadata(
        temperature_K=sim.temperature,
        timestep_ps=cfg.timestep,
        friction_per_ps=cfg.friction,
        report_interval_steps=report_interval,
        n_steps=n_steps,
        seed=cfg.seed,
        minimized=bool(minimize),
        centered=center,
        platform=sim.platform,
    )
    writer = TrajectoryWriter(out, system, metadata) if out is not None else None
    frames = FrameRecorder(system, n_frames, writer, center=center, flush_every=flush_every)

    def record(i: int) -> None:
        frames.record(
            sim.context.getState(positions=True, energy=True, forces=True),
            step=(i + 1) * report_interval,
        )

    try:
        sim.run(n_frames * report_interval, report_interval, report=record, progress=progress)
    finally:
        frames.close()
    if progress is not None:
        progress(n_steps, n_steps)
    return frames.trajectory()


def load_md(path: str | os.PathLike[str]) -> MDData:
    """Read a file written by :func:`simulate`: trajectory, energies (kJ/mol), forces."""
    return MDData(**read_md(path))


def concatenate_md(datasets: list[MDData]) -> MDData:
    """Join MD data sets of one system at one temperature into one (frames in the given order).

    Each set must carry the same system spec (PDB, force field, solvent) or none, the same atom
    count and the same ``temperature_K``: only then are the frames draws from one Boltzmann
    distribution that a flow may be fitted to. The result's metadata lists the sources' metadata
    under ``"sources"``; time is each source's own time (not shifted).
    """
    if not datasets:
        raise InputError("concatenate_md needs at least one data set")
    first = datasets[0]
    temps = {d.metadata.get("temperature_K") for d in datasets}
    for i, d in enumerate(datasets[1:], start=1):
        if d.trajectory.n_atoms != first.trajectory.n_atoms:
            raise StructureError(
                f"data set {i} has {d.trajectory.n_atoms} atoms, data set 0 has "
                f"{first.trajectory.n_atoms}"
            )
        if d.system_spec != first.system_spec:
            raise StructureError(f"data set {i} was made with a different system than data set 0")
    if len(temps) > 1:
        raise StructureError(f"data sets have different temperatures: {sorted(map(str, temps))}")
    traj = mdtraj.join([d.trajectory for d in datasets], check_topology=True)
    meta = {"temperature_K": temps.pop(), "sources": [d.metadata for d in datasets]}
    return MDData(
        traj,
        np.concatenate([d.potential_energy for d in datasets]),
        np.concatenate([d.forces for d in datasets]),
        np.concatenate([d.time for d in datasets]),
        meta,
        first.system_spec,
    )


def calibrate_md(
    system: System,
    *,
    seconds: float = 2.0,
    timestep: float | None = None,
    platform: str | None = None,
    seed: int | None = None,
    langevin: LangevinConfig | None = None,
) -> dict[str, float]:
    """Time plain Langevin MD of ``system`` for about ``seconds``: steps per second and the
    setup cost (context creation and a short minimisation), as
    :func:`boltzgen.pipeline.calibrate_remd` does for replica exchange.

    ``langevin``: the settings to time (default :class:`LangevinConfig`(); one CPU thread);
    the old keywords ``timestep``/``platform``/``seed`` still work (deprecated). The
    integrator is seeded with seed + 7919, apart from the production run's stream."""
    cfg = resolve_langevin(
        langevin,
        LangevinConfig(),
        "calibrate_md",
        timestep=timestep,
        platform=platform,
        seed=seed,
    )
    t0 = time.perf_counter()
    sim = Simulation(system, cfg.replace(seed=cfg.seed + 7919))
    sim.start(minimize=True, velocities=False, max_iterations=100)
    sim.step(10)
    ta = time.perf_counter()
    steps, chunk = 0, 100
    while time.perf_counter() - ta < seconds and steps < 1_000_000:
        sim.step(chunk)
        steps += chunk
        chunk = min(2 * chunk, 20_000)
    tb = time.perf_counter()
    return {
        "steps_per_second": steps / max(tb - ta, 1e-6),
        "setup_seconds": ta - t0,
        "calibration_seconds": tb - t0,
    }
