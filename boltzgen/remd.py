"""Temperature replica exchange (REMD): an unbiased training-data generator.

:func:`replica_exchange` runs one :class:`boltzgen.simulation.Simulation` per temperature of a
ladder, with Metropolis swaps of neighbours (:func:`exchange_log_acceptance`,
:func:`exchange_sweep`; velocities rescaled by sqrt(T_new/T_old)), and records the replica at
the target temperature with energies and forces, in the same HDF5 format as
:func:`boltzgen.md.simulate` (readable by :func:`boltzgen.md.load_md` and ``mdtraj.load``).
This module adds only the ladder and the exchange step to the shared driver; the replicas step
in this process or over worker processes (:class:`boltzgen.replica_pool.ReplicaPool`,
``n_workers``).

Units at the boundary: nm, ps, K, kJ/mol.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mdtraj
import numpy as np
import openmm.unit as unit

from boltzgen.cores import contiguous_groups
from boltzgen.errors import InputError
from boltzgen.h5io import TrajectoryWriter
from boltzgen.replica_pool import ReplicaPool
from boltzgen.simulation import (
    FrameRecorder,
    LangevinConfig,
    langevin_metadata,
    resolve_langevin,
    run_in_chunks,
)
from boltzgen.systems import GAS_CONSTANT, System

__all__ = [
    "REMDResult",
    "exchange_log_acceptance",
    "exchange_sweep",
    "geometric_temperatures",
    "replica_exchange",
]

ProgressFn = Callable[[int, int], None]
_KJ = unit.kilojoule_per_mole


@dataclass
class REMDResult:
    """Output of :func:`replica_exchange`.

    trajectory: frames of the target-temperature replica (mdtraj, nm, float32, centred);
    potential_energy: (n_frames,) kJ/mol; forces: (n_frames, n_atoms, 3) kJ/mol/nm;
    temperatures: (R,) K; target_index: which of them was recorded; acceptance: (R-1,)
    accepted fraction of swaps between neighbours i, i+1; n_attempts: (R-1,);
    replica_of_frame: (n_frames,) which walker (start configuration label) each recorded
    frame came from (shows mixing); wall_time: s; settings: the arguments.
    """

    trajectory: mdtraj.Trajectory
    potential_energy: np.ndarray
    forces: np.ndarray
    temperatures: np.ndarray
    target_index: int
    acceptance: np.ndarray
    n_attempts: np.ndarray
    replica_of_frame: np.ndarray
    wall_time: float
    settings: dict[str, Any] = field(default_factory=dict)


def geometric_temperatures(t_min: float, t_max: float, n: int) -> np.ndarray:
    """(n,) temperatures in K spaced geometrically from t_min to t_max (standard REMD ladder)."""
    if n < 2 or not 0 < t_min < t_max:
        raise InputError("need n >= 2 and 0 < t_min < t_max")
    return t_min * (t_max / t_min) ** (np.arange(n) / (n - 1))


def exchange_log_acceptance(
    u_i: float | np.ndarray, u_j: float | np.ndarray, t_i: float, t_j: float
) -> float | np.ndarray:
    """log of the Metropolis probability of swapping the configurations of the replicas at
    temperatures ``t_i`` and ``t_j`` (K) whose potential energies are ``u_i`` and ``u_j``
    (kJ/mol): (beta_i - beta_j)(U_i - U_j) with beta = 1/(R T). The swap is accepted with
    probability min(1, exp(that)), which keeps each temperature's Boltzmann distribution."""
    beta_i = 1.0 / (GAS_CONSTANT * np.asarray(t_i, dtype=np.float64))
    beta_j = 1.0 / (GAS_CONSTANT * np.asarray(t_j, dtype=np.float64))
    return (beta_i - beta_j) * (np.asarray(u_i, dtype=np.float64) - u_j)


def exchange_sweep(
    u: np.ndarray, temperatures: np.ndarray, parity: int, rng: np.random.Generator
) -> list[int]:
    """One sweep of neighbour swaps: pairs (i, i+1) for i = parity, parity + 2, ...; returns
    the i whose swap is accepted. Pairs are disjoint, so each is decided on the energies ``u``
    (R,) kJ/mol before the sweep. A uniform draw is used only when the log-acceptance is < 0."""
    accepted = []
    for i in range(int(parity) % 2, len(u) - 1, 2):
        log_acc = float(
            exchange_log_acceptance(u[i], u[i + 1], temperatures[i], temperatures[i + 1])
        )
        if log_acc >= 0 or rng.random() < math.exp(log_acc):
            accepted.append(i)
    return accepted


class _Ladder:
    """The exchange step over a :class:`boltzgen.replica_pool.ReplicaPool` (the replicas, one
    Simulation per temperature, in this process or over worker processes)."""

    def __init__(
        self, pool: ReplicaPool, temps: np.ndarray, seed: int, exchange_interval: int
    ) -> None:
        self.pool, self.temps, self.exchange_interval = pool, temps, exchange_interval
        self.rng = np.random.default_rng(seed)
        self.label = np.arange(len(temps))  # which walker sits at temperature r
        self.accepted = np.zeros(len(temps) - 1, dtype=np.int64)
        self.attempts = np.zeros(len(temps) - 1, dtype=np.int64)
        self.cycle = 0

    def advance(self, n_steps: int) -> None:
        """n_steps // exchange_interval cycles: every replica steps, then neighbours swap."""
        for _ in range(int(n_steps) // self.exchange_interval):
            self._cycle()

    def _cycle(self) -> None:
        u, x, v = self.pool.step(self.exchange_interval)
        if not np.isfinite(u).all():
            raise InputError(
                f"REMD blew up (non-finite energy at T = {self.temps[~np.isfinite(u)].tolist()} "
                "K); use a smaller timestep or lower temperatures"
            )
        parity = self.cycle % 2
        self.attempts[parity::2] += 1
        for i in exchange_sweep(u, self.temps, parity, self.rng):
            self.accepted[i] += 1
            scale = math.sqrt(self.temps[i + 1] / self.temps[i])
            # v * (1 / scale), as openmm.unit divides a Quantity (earlier runs stay bitwise)
            self.pool.set(i, x[i + 1], v[i + 1] * (1.0 / scale))
            self.pool.set(i + 1, x[i], v[i] * scale)
            self.label[i], self.label[i + 1] = self.label[i + 1], self.label[i]
        self.cycle += 1

    def acceptance(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.where(self.attempts > 0, self.accepted / np.maximum(self.attempts, 1), np.nan)


def _check_ladder(temperatures: Sequence[float], target: float) -> tuple[np.ndarray, int]:
    temps = np.asarray(temperatures, dtype=np.float64)
    if temps.ndim != 1 or len(temps) < 2:
        raise InputError("replica exchange needs at least 2 temperatures")
    if not np.all(temps > 0) or not np.all(np.diff(temps) > 0):
        raise InputError(f"temperatures must be positive and increasing, got {temps.tolist()}")
    hits = np.flatnonzero(np.isclose(temps, target, rtol=0, atol=1e-6))
    if len(hits) != 1:
        raise InputError(f"the target temperature {target} K is not in {temps.tolist()}")
    return temps, int(hits[0])


def replica_exchange(
    system: System,
    temperatures: Sequence[float],
    n_steps: int,
    exchange_interval: int = 100,
    report_interval: int = 500,
    n_equilibration: int = 20_000,
    timestep: float | None = None,
    friction: float | None = None,
    seed: int | None = None,
    target_temperature: float | None = None,
    out: str | os.PathLike[str] | None = None,
    platform: str | None = None,
    threads: int | None = None,
    positions: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    center: bool = True,
    flush_every: int = 1000,
    langevin: LangevinConfig | None = None,
    n_workers: int = 1,
) -> REMDResult:
    """Temperature replica exchange MD; records the replica at ``target_temperature``.

    Every ``exchange_interval`` steps all replicas have moved; then neighbour pairs (even
    pairs on even exchanges, odd pairs on odd ones) swap configurations with Metropolis
    probability min(1, exp((1/kT_i - 1/kT_j)(U_i - U_j))) (:func:`exchange_sweep`); velocities
    are rescaled by sqrt(T_new/T_old). Every ``report_interval`` steps (a multiple of
    ``exchange_interval``) the target replica's positions, potential energy and forces are
    recorded (forces are those of the recorded configuration, evaluated when it is saved).

    Args:
        system: the molecule (its temperature is the default target).
        temperatures: (R,) K, increasing; must contain the target temperature.
        n_steps: production steps per replica (after ``n_equilibration`` steps with
            exchanges but no recording).
        langevin: :class:`boltzgen.simulation.LangevinConfig` shared by the replicas (default:
            1 fs, 1/ps, platform "auto", seed 0, one CPU thread per replica); replica r runs at
            temperatures[r] with seed * 1000 + r; the seed also seeds the swap decisions; its
            temperature, if set, is the default target. The old keywords timestep, friction,
            seed, platform and threads still work (deprecated).
        out: HDF5 path written with :class:`boltzgen.h5io.TrajectoryWriter` (mdtraj HDF5 +
            ``/forces``, system spec and settings in ``/boltzgen_md``); read back with
            :func:`boltzgen.md.load_md`.
        positions: start (n_atoms, 3) nm; every replica starts there (energy-minimised).
        progress: ``progress(steps_done, n_steps_total)`` including equilibration.
        center: store frames with their centroid at the origin (as :func:`simulate`).
        n_workers: processes that step the replicas (:class:`boltzgen.replica_pool.
            ReplicaPool`): 1 = all in this process; k > 1 = this process plus k - 1 spawned
            workers, each stepping a contiguous group of replicas with its own Contexts (at
            most one per replica). Bit-identical trajectories for every k on the CPU platform;
            on Reference the same ensemble but other noise (its random stream is one per
            process: :mod:`boltzgen.replica_pool`). A script using k > 1 must guard its
            entry point with ``if __name__ == '__main__':``.

    Returns: :class:`REMDResult`.
    """
    cfg = resolve_langevin(
        langevin,
        LangevinConfig(),
        "replica_exchange",
        timestep=timestep,
        friction=friction,
        seed=seed,
        platform=platform,
        threads=threads,
    )
    t0 = time.perf_counter()
    target = float(cfg.temperature_of(system) if target_temperature is None else target_temperature)
    temps, it = _check_ladder(temperatures, target)
    n_steps, exchange_interval = int(n_steps), int(exchange_interval)
    report_interval, n_equilibration = int(report_interval), int(n_equilibration)
    if exchange_interval < 1 or report_interval < exchange_interval:
        raise InputError("need report_interval >= exchange_interval >= 1")
    if report_interval % exchange_interval:
        raise InputError("report_interval must be a multiple of exchange_interval")
    if n_steps < report_interval or n_equilibration < 0:
        raise InputError("need n_steps >= report_interval and n_equilibration >= 0")

    if isinstance(n_workers, bool) or int(n_workers) != n_workers or n_workers < 1:
        raise InputError(f"n_workers must be an integer >= 1, got {n_workers!r}")
    groups = contiguous_groups(len(temps), int(n_workers))
    with ReplicaPool(system, temps, cfg, groups) as pool:
        pool.start(positions)
        ladder = _Ladder(pool, temps, cfg.seed, exchange_interval)
        n_frames = n_steps // report_interval
        steps_eq = -(-n_equilibration // exchange_interval) * exchange_interval
        total_steps = steps_eq + n_frames * report_interval
        metadata = langevin_metadata(
            method="temperature replica exchange",
            temperature_K=target,
            temperatures_K=temps.tolist(),
            exchange_interval_steps=exchange_interval,
            timestep_ps=cfg.timestep,
            friction_per_ps=cfg.friction,
            report_interval_steps=report_interval,
            n_steps=n_steps,
            n_equilibration_steps=steps_eq,
            seed=cfg.seed,
            minimized=True,
            centered=bool(center),
            platform=pool.platform,
        )
        writer = TrajectoryWriter(out, system, metadata) if out is not None else None
        frames = FrameRecorder(system, n_frames, writer, center=center, flush_every=flush_every)
        walker = np.empty(n_frames, dtype=np.int64)

        def record(f: int) -> None:
            x, energy, forces = pool.frame(it)
            step = (f + 1) * report_interval
            frames.add(x, energy, forces, time=step * cfg.timestep, step=steps_eq + step)
            walker[f] = ladder.label[it]

        try:
            run_in_chunks(
                ladder.advance, steps_eq, exchange_interval,
                progress=progress, progress_every=100, total=total_steps,
            )  # fmt: skip
            run_in_chunks(
                ladder.advance, n_frames * report_interval, report_interval, report=record,
                progress=progress, done_before=steps_eq, total=total_steps,
            )  # fmt: skip
        finally:
            frames.close()
        n_used = pool.n_workers
    return REMDResult(
        trajectory=frames.trajectory(),
        potential_energy=frames.energy,
        forces=frames.forces,
        temperatures=temps,
        target_index=it,
        acceptance=ladder.acceptance(),
        n_attempts=ladder.attempts,
        replica_of_frame=walker,
        wall_time=time.perf_counter() - t0,
        settings={**metadata, "n_workers": n_used},
    )
