"""Langevin MD that writes an mdtraj HDF5 trajectory with per-frame energies and forces.

The file is a normal mdtraj HDF5 trajectory (``mdtraj.load(path)`` opens it): positions
(float32, nm), time (ps) and ``potentialEnergy`` (kJ/mol) in mdtraj's own layout, plus a
``/forces`` array (float32, kJ/mol/nm, same frame order) and ``/boltzgen_system`` (the system
spec as JSON bytes) so the data set can be reloaded with its force field.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit

from boltzgen.errors import InputError, StructureError
from boltzgen.openmm_context import (
    check_langevin_settings,
    fastest_platform,
    langevin_integrator,
    make_context,
    openmm_seed,
)
from boltzgen.systems import System

__all__ = [
    "MDData",
    "TrajectoryWriter",
    "calibrate_md",
    "concatenate_md",
    "load_md",
    "simulate",
]

_FILTERS = {"complevel": 4, "complib": "zlib", "shuffle": True}


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


def langevin_metadata(**fields: Any) -> dict[str, Any]:
    """The metadata an MD file records (``/boltzgen_md``): the given fields (temperature_K,
    timestep_ps, friction_per_ps, seed, platform, ...) plus the integrator and OpenMM's
    version, written the same way by :func:`simulate` and replica exchange."""
    return {
        **fields,
        "integrator": "LangevinMiddleIntegrator",
        "openmm_version": openmm.__version__,
    }


def simulate(
    system: System,
    n_steps: int,
    timestep: float = 0.002,
    report_interval: int = 100,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    friction: float = 1.0,
    temperature: float | None = None,
    minimize: bool = True,
    platform: str = "auto",
    platform_properties: dict[str, str] | None = None,
    positions: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    flush_every: int = 1000,
    center: bool = True,
) -> mdtraj.Trajectory:
    """Run Langevin MD (LangevinMiddleIntegrator) and record every ``report_interval`` steps.

    Args:
        system: what to simulate (its constraints setting applies).
        n_steps: number of integration steps; n_steps // report_interval frames are written.
        timestep: ps. friction: 1/ps. temperature: K (default: ``system.temperature``).
        out: HDF5 path (``.h5``); None keeps the trajectory in memory only.
        seed: seeds both the initial velocities and the integrator's random stream.
        minimize: minimise the energy before starting.
        platform: OpenMM platform name or ``"auto"``: the platform measured fastest for the
            system (:func:`boltzgen.openmm_context.fastest_platform`, as the generator's
            energy model uses), e.g. Reference for small vacuum molecules, else
            CUDA > CPU > Reference. platform_properties: OpenMM platform properties.
        positions: start (n_atoms, 3) nm (default: ``system.positions``).
        progress: optional callback ``progress(steps_done, n_steps)``.
        center: store each frame with its centroid at the origin (the molecule diffuses under
            Langevin noise; centring keeps float32 positions precise). Energies and forces do
            not change: without periodic boundaries they are translation invariant.

    Returns: mdtraj.Trajectory of the recorded frames (float32 positions, time in ps).
    """
    n_steps, report_interval = int(n_steps), int(report_interval)
    if n_steps < 0 or report_interval < 1:
        raise InputError("n_steps must be >= 0 and report_interval >= 1")
    check_langevin_settings(timestep, friction)
    temperature = float(system.temperature if temperature is None else temperature)
    start = system.positions if positions is None else np.asarray(positions, dtype=np.float64)
    if start.shape != (system.n_atoms, 3):
        raise InputError(f"positions must be ({system.n_atoms}, 3) nm, got {start.shape}")

    integrator = langevin_integrator(temperature, friction, timestep, seed)
    context = make_context(system, integrator, platform, platform_properties)
    platform_name = context.getPlatform().getName()
    center = bool(center) and not context.getSystem().usesPeriodicBoundaryConditions()
    context.setPositions(start)
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))

    n_frames = n_steps // report_interval
    metadata = langevin_metadata(
        temperature_K=temperature,
        timestep_ps=float(timestep),
        friction_per_ps=float(friction),
        report_interval_steps=report_interval,
        n_steps=n_steps,
        seed=int(seed),
        minimized=bool(minimize),
        centered=bool(center),
        platform=platform_name,
    )
    writer = TrajectoryWriter(out, system, metadata) if out is not None else None
    xyz = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
    times = np.empty(n_frames)
    buf_start = 0
    energy = np.empty(n_frames)
    forces = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
    try:
        for i in range(n_frames):
            integrator.step(report_interval)
            state = context.getState(getPositions=True, getEnergy=True, getForces=True)
            pos = state.getPositions(asNumpy=True)._value
            xyz[i] = pos - pos.mean(axis=0) if center else pos
            forces[i] = state.getForces(asNumpy=True)._value
            energy[i] = state.getPotentialEnergy()._value
            times[i] = state.getTime()._value
            if not np.isfinite(energy[i]):
                raise InputError(
                    f"MD blew up at step {(i + 1) * report_interval}: non-finite energy; "
                    "use a smaller timestep or minimise first"
                )
            if writer is not None and i + 1 - buf_start >= flush_every:
                writer.append(xyz, times, energy, forces, buf_start, i + 1)
                buf_start = i + 1
            if progress is not None:
                progress((i + 1) * report_interval, n_steps)
        if writer is not None:
            writer.append(xyz, times, energy, forces, buf_start, n_frames)
    finally:
        if writer is not None:
            writer.close()
    if progress is not None:
        progress(n_steps, n_steps)
    return mdtraj.Trajectory(xyz, system.topology, time=times)


class TrajectoryWriter:
    """Appends frames to an mdtraj HDF5 file plus a compressed ``/forces`` EArray.

    ``TrajectoryWriter(out, system, metadata)``; ``append(xyz, times, energy, forces, a, b)``
    writes frames a:b of the given arrays (nm, ps, kJ/mol, kJ/mol/nm); ``close()``. Files it
    writes are read by :func:`load_md`.
    """

    def __init__(self, out: str | os.PathLike[str], system: System, metadata: dict[str, Any]):
        import tables

        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = mdtraj.formats.HDF5TrajectoryFile(str(path), mode="w", force_overwrite=True)
        self.file.topology = system.topology
        handle = self.file._handle
        filters = tables.Filters(**_FILTERS)
        self.forces = handle.create_earray(
            "/",
            "forces",
            atom=tables.Float32Atom(),
            shape=(0, system.n_atoms, 3),
            filters=filters,
            title="forces in kJ/mol/nm, one row per frame",
        )
        self.forces.attrs["units"] = "kilojoule/mole/nanometer"
        spec = json.dumps(system.to_spec()).encode()
        handle.create_array("/", "boltzgen_system", obj=np.frombuffer(spec, dtype=np.uint8))
        handle.create_array(
            "/", "boltzgen_md", obj=np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
        )

    def append(self, xyz, times, energy, forces, a: int, b: int) -> None:  # noqa: ANN001
        if b <= a:
            return
        self.file.write(
            coordinates=xyz[a:b],
            time=times[a:b],
            potentialEnergy=energy[a:b].astype(np.float32),
        )
        self.forces.append(forces[a:b])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def load_md(path: str | os.PathLike[str]) -> MDData:
    """Read a file written by :func:`simulate`: trajectory, energies (kJ/mol), forces."""
    import tables

    path = Path(path)
    if not path.exists():
        raise InputError(f"MD file {str(path)!r} does not exist")
    if not tables.is_hdf5_file(str(path)):
        raise StructureError(f"{path.name} is not an HDF5 file (an MD file from simulate/remd)")
    try:
        traj = mdtraj.load(str(path))
    except Exception as exc:  # mdtraj/PyTables raise assorted types for foreign HDF5 files
        raise StructureError(f"{path.name} is not an mdtraj HDF5 trajectory: {exc}") from exc
    with tables.open_file(str(path), "r") as h:
        if "/forces" not in h or "/potentialEnergy" not in h:
            raise StructureError(f"{path} has no forces/potentialEnergy arrays (not from simulate)")
        forces = h.get_node("/forces")[:]
        energy = h.get_node("/potentialEnergy")[:].astype(np.float64)
        spec = (
            json.loads(bytes(h.get_node("/boltzgen_system")[:]).decode())
            if "/boltzgen_system" in h
            else None
        )
        meta = (
            json.loads(bytes(h.get_node("/boltzgen_md")[:]).decode()) if "/boltzgen_md" in h else {}
        )
    if not (len(forces) == len(energy) == traj.n_frames):
        raise StructureError(
            f"{path}: frame counts differ (positions {traj.n_frames}, energies {len(energy)}, "
            f"forces {len(forces)})"
        )
    return MDData(traj, energy, forces, np.asarray(traj.time), meta, spec)


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
    system, *, seconds: float = 2.0, timestep: float = 0.001, platform: str = "auto", seed: int = 0
) -> dict[str, float]:
    """Time plain Langevin MD of ``system`` for about ``seconds``: steps per second and the
    setup cost (context creation and a short minimisation), as
    :func:`boltzgen.pipeline.calibrate_remd` does for replica exchange."""
    t0 = time.perf_counter()
    integrator = langevin_integrator(system.temperature, 1.0, timestep, seed + 7919)
    context = make_context(system, integrator, fastest_platform(system, platform), threads=1)
    context.setPositions(system.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=100)
    integrator.step(10)
    ta = time.perf_counter()
    steps, chunk = 0, 100
    while time.perf_counter() - ta < seconds and steps < 1_000_000:
        integrator.step(chunk)
        steps += chunk
        chunk = min(2 * chunk, 20_000)
    tb = time.perf_counter()
    return {
        "steps_per_second": steps / max(tb - ta, 1e-6),
        "setup_seconds": ta - t0,
        "calibration_seconds": tb - t0,
    }
