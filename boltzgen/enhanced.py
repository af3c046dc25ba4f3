"""Enhanced sampling on any :class:`boltzgen.System`: umbrella sampling + MBAR along a dihedral,
and temperature replica exchange (REMD) as an unbiased training-data generator.

Why: plain MD of alanine dipeptide at 300 K (vacuum) practically never crosses to phi > 0
(see ``shared/REFERENCES.md``), so neither a free-energy reference nor representative training
data can come from it.

* :func:`umbrella_sampling` restrains a dihedral to a ladder of centres with a periodic
  harmonic bias ``0.5 k d^2``, ``d = min(|theta - theta0|, 2 pi - |theta - theta0|)``. Windows are
  walked outward from the unbiased minimum in both directions, each starting from the last
  frame of its neighbour, so slow orthogonal degrees of freedom (psi) relax continuously
  instead of being trapped in the wrong basin. Samples are subsampled by their statistical
  inefficiency and combined with MBAR (pymbar) into the unbiased profile and state free
  energies with analytical MBAR uncertainties.
* :func:`replica_exchange` runs Langevin replicas on a temperature ladder with Metropolis swaps
  of neighbours (velocities rescaled by sqrt(T_new/T_old)) and records the replica at the
  target temperature with energies and forces, written in the same HDF5 format as
  :func:`boltzgen.md.simulate` (readable by :func:`boltzgen.md.load_md` and ``mdtraj.load``).

Units at the boundary: nm, ps, K, kJ/mol, radians; free energies in kT.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit

from boltzgen.analysis import in_state
from boltzgen.cv import Dihedral
from boltzgen.errors import InputError
from boltzgen.md import TrajectoryWriter, langevin_metadata
from boltzgen.openmm_context import (
    check_langevin_settings,
    fastest_platform,
    langevin_integrator,
    make_context,
    openmm_seed,
)
from boltzgen.systems import GAS_CONSTANT, System

__all__ = [
    "REMDResult",
    "UmbrellaResult",
    "fastest_platform",
    "replica_exchange",
    "umbrella_sampling",
]

ProgressFn = Callable[[int, int], None]
logging.getLogger("pymbar").setLevel(logging.ERROR)  # its import banners are not our warnings
_TWO_PI = 2.0 * math.pi
_UNBIASED = (1 << 31) - 1  # force groups 0..30: everything but the umbrella bias (group 31)


# ============================================================================ umbrella sampling
def _periodic_distance(theta: np.ndarray, theta0: np.ndarray | float) -> np.ndarray:
    d = np.abs(np.asarray(theta) - theta0) % _TWO_PI
    return np.minimum(d, _TWO_PI - d)


def _wrap_angle(a: float) -> float:
    return float(-((-a + math.pi) % _TWO_PI - math.pi))  # into (-pi, pi]


@dataclass
class UmbrellaResult:
    """Output of :func:`umbrella_sampling`.

    centers: (K,) window centres (rad), in the order given; k: spring constant kJ/mol/rad^2;
    kT: kJ/mol; cv: list of K arrays, every recorded CV value per window (rad, after
    equilibration); potential_energy: list of K arrays, the unbiased potential energy (kJ/mol)
    of the same frames; g: (K,) statistical inefficiencies (frames, the larger of the CV's
    and the energy's); n_independent: (K,) frames
    kept for MBAR; order: the order windows were run in (indices into centers);
    wall_time: s; settings: the arguments. ``mbar`` is the fitted ``pymbar.MBAR``.
    """

    centers: np.ndarray
    k: float
    kT: float
    cv: list[np.ndarray]
    potential_energy: list[np.ndarray]
    g: np.ndarray
    n_independent: np.ndarray
    order: list[int]
    wall_time: float
    settings: dict[str, Any] = field(default_factory=dict)
    mbar: Any = None
    _x_n: np.ndarray | None = None

    def free_energy_difference(
        self, state_a: Sequence[float], state_b: Sequence[float]
    ) -> tuple[float, float]:
        """dF = F(A) - F(B) = -log(P_A/P_B) in kT of the unbiased ensemble, with the MBAR
        standard error. States are half-open CV intervals as in
        :func:`boltzgen.analysis.free_energy_difference` (``lo > hi`` wraps)."""
        x = self._x_n
        u = np.stack(
            [np.where(in_state(x, s), 0.0, np.inf) for s in (state_a, state_b)]
        )  # unbiased ensemble restricted to each state
        if not np.isfinite(u).any(axis=1).all():
            raise InputError("a state holds no umbrella sample; widen it or add windows")
        r = self.mbar.compute_perturbed_free_energies(u)
        return float(r["Delta_f"][1, 0]), float(r["dDelta_f"][1, 0])

    def profile(
        self,
        bins: int = 36,
        range: tuple[float, float] = (-math.pi, math.pi),  # noqa: A002
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unbiased free-energy profile along the CV: (centers (bins,), F (bins,) kT with
        min 0, F_err (bins,) MBAR standard error relative to the minimum bin); empty bins nan."""
        x = self._x_n
        edges = np.linspace(range[0], range[1], int(bins) + 1)
        which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, int(bins) - 1)
        inside = (x >= edges[0]) & (x <= edges[-1])
        filled = [b for b in np.arange(int(bins)) if np.any(inside & (which == b))]
        u = np.stack([np.where(inside & (which == b), 0.0, np.inf) for b in filled])
        r = self.mbar.compute_perturbed_free_energies(u)
        f_rel = r["Delta_f"][0]
        i_min = int(np.argmin(f_rel))
        f = np.full(int(bins), np.nan)
        err = np.full(int(bins), np.nan)
        f[filled] = f_rel - f_rel[i_min]
        err[filled] = r["dDelta_f"][i_min]
        return 0.5 * (edges[1:] + edges[:-1]), f, err


def _inefficiency(series: np.ndarray) -> float:
    """Statistical inefficiency (>= 1 frames) of a time series; 1 for a constant series."""
    import pymbar

    if len(series) < 3 or np.ptp(series) == 0:
        return 1.0
    try:
        return max(1.0, float(pymbar.timeseries.statistical_inefficiency(series)))
    except pymbar.utils.ParameterError:  # degenerate series
        return 1.0


def _umbrella_plan(centers: np.ndarray, start: float) -> list[tuple[int, int | None]]:
    """(window, predecessor) pairs: start at the centre nearest ``start`` (the unbiased
    minimum), then walk up the sorted (circular) ladder and down from the start, each window
    seeded by its neighbour on the way; the two walks meet on the far side."""
    k = len(centers)
    ladder = np.argsort(centers)
    pos = {int(w): i for i, w in enumerate(ladder)}
    first = int(np.argmin(_periodic_distance(centers, start)))
    i0 = pos[first]
    n_up = k // 2
    plan: list[tuple[int, int | None]] = [(first, None)]
    prev = first
    for j in range(1, n_up + 1):
        w = int(ladder[(i0 + j) % k])
        plan.append((w, prev))
        prev = w
    prev = first
    for j in range(1, k - n_up):
        w = int(ladder[(i0 - j) % k])
        plan.append((w, prev))
        prev = w
    return plan


def umbrella_sampling(
    system: System,
    cv_atoms: Sequence[int],
    centers: Sequence[float],
    k: float = 250.0,
    n_steps_per_window: int = 100_000,
    n_equilibration: int = 10_000,
    report_interval: int = 100,
    timestep: float = 0.001,
    friction: float = 1.0,
    temperature: float | None = None,
    seed: int = 0,
    platform: str = "auto",
    threads: int | None = 1,
    positions: np.ndarray | None = None,
    n_minimum_search: int = 20_000,
    progress: ProgressFn | None = None,
) -> UmbrellaResult:
    """Umbrella sampling along a dihedral with MBAR analysis.

    Args:
        system: what to simulate (force field, solvent; ``temperature`` defaults to its own).
        cv_atoms: 4 atom indices of the dihedral (e.g. ``boltzgen.cv.dihedral(s, "phi").atoms``).
        centers: (K,) window centres, rad (any order; e.g. ``np.linspace(-pi, pi, K,
            endpoint=False)``). Neighbouring windows must overlap: choose ``k`` so that
            sqrt(kT/k) is about the spacing or more.
        k: spring constant, kJ/mol/rad^2; bias 0.5 k d^2 with d the periodic angle distance.
        n_steps_per_window: production steps per window (after ``n_equilibration`` steps).
        report_interval: steps between recorded CV values.
        timestep: ps (default 1 fs: the systems have no constraints by default).
        friction: 1/ps. seed: seeds velocities and every window's Langevin stream.
        platform: OpenMM platform ("auto": :func:`fastest_platform`); threads: CPU threads.
        positions: start (n_atoms, 3) nm (default: the system's, energy-minimised).
        n_minimum_search: unbiased steps before the first window, to find where the unbiased
            system sits (the walk starts at the window nearest the CV there).
        progress: ``progress(windows_done, n_windows)``.

    Returns: :class:`UmbrellaResult` (``.free_energy_difference(a, b)``, ``.profile()``).
    """
    import pymbar

    t0 = time.perf_counter()
    atoms = tuple(int(a) for a in cv_atoms)
    if len(atoms) != 4 or len(set(atoms)) != 4 or not all(0 <= a < system.n_atoms for a in atoms):
        raise InputError(
            f"cv_atoms must be 4 distinct atom indices < {system.n_atoms}, got {cv_atoms}"
        )
    c = np.asarray([_wrap_angle(float(x)) for x in centers], dtype=np.float64)
    if c.ndim != 1 or len(c) < 2:
        raise InputError("umbrella sampling needs at least 2 window centres")
    if not k > 0:
        raise InputError(f"spring constant k must be > 0 kJ/mol/rad^2, got {k}")
    n_steps_per_window, report_interval = int(n_steps_per_window), int(report_interval)
    if report_interval < 1 or n_steps_per_window < report_interval:
        raise InputError("need n_steps_per_window >= report_interval >= 1")
    check_langevin_settings(timestep, friction)
    temperature = float(system.temperature if temperature is None else temperature)
    kT = GAS_CONSTANT * temperature
    platform_name = fastest_platform(system, platform)

    omm_system = openmm.XmlSerializer.deserialize(system.serialize_openmm())
    bias = openmm.CustomTorsionForce(
        "0.5*k_umb*d^2; d = min(dt, 2*pi - dt); dt = abs(theta - theta0); pi = 3.141592653589793"
    )
    bias.addGlobalParameter("k_umb", float(k))
    bias.addGlobalParameter("theta0", 0.0)
    bias.addTorsion(*atoms, [])
    bias.setForceGroup(31)
    omm_system.addForce(bias)
    integrator = langevin_integrator(temperature, friction, timestep, seed)
    context = make_context(omm_system, integrator, platform_name, threads=threads)
    cv = Dihedral(atoms)
    context.setPositions(system.start_positions(positions))
    context.setParameter("k_umb", 0.0)
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, openmm_seed(seed))
    integrator.step(int(n_minimum_search))
    state = context.getState(getPositions=True)
    start_cv = float(cv(state.getPositions(asNumpy=True)._value)[0])
    context.setParameter("k_umb", float(k))

    plan = _umbrella_plan(c, start_cv)
    last_state: dict[int, openmm.State] = {}
    samples: dict[int, np.ndarray] = {}
    energies: dict[int, np.ndarray] = {}
    n_rec = n_steps_per_window // report_interval
    for i, (w, pred) in enumerate(plan):
        if pred is not None:
            context.setState(last_state[pred])
        context.setParameter("theta0", float(c[w]))
        context.setParameter("k_umb", float(k))
        integrator.setRandomNumberSeed(openmm_seed(seed * 1000 + w + 1))
        integrator.step(int(n_equilibration))
        vals, ener = np.empty(n_rec), np.empty(n_rec)
        for j in range(n_rec):
            integrator.step(report_interval)
            st = context.getState(getPositions=True, getEnergy=True, groups=_UNBIASED)
            vals[j] = cv(st.getPositions(asNumpy=True)._value)[0]
            ener[j] = st.getPotentialEnergy()._value
        samples[w] = vals
        energies[w] = ener
        last_state[w] = context.getState(getPositions=True, getVelocities=True)
        if progress is not None:
            progress(i + 1, len(plan))

    # statistical inefficiency per window: the larger of those of the CV (signed periodic
    # distance from the centre) and of the unbiased potential energy, which also sees slow
    # orthogonal motions (e.g. psi flips at fixed phi) that the restrained CV alone hides
    g = np.empty(len(c))
    kept = []
    for w in range(len(c)):
        v = samples[w]
        d = _periodic_distance(v, c[w]) * np.sign(np.sin(v - c[w]))
        g[w] = max(_inefficiency(d), _inefficiency(energies[w]))
        idx = np.unique(np.round(np.arange(0, len(v), g[w])).astype(int))
        idx = idx[idx < len(v)]
        kept.append(v[idx])
    x_n = np.concatenate(kept)
    n_k = np.array([len(v) for v in kept])
    u_kn = 0.5 * float(k) * _periodic_distance(x_n[None, :], c[:, None]) ** 2 / kT
    mbar = pymbar.MBAR(u_kn, n_k)
    settings = {
        "cv_atoms": list(atoms),
        "n_windows": len(c),
        "k_kJ_per_mol_rad2": float(k),
        "n_steps_per_window": n_steps_per_window,
        "n_equilibration": int(n_equilibration),
        "report_interval": report_interval,
        "timestep_ps": float(timestep),
        "friction_per_ps": float(friction),
        "temperature_K": temperature,
        "seed": int(seed),
        "platform": platform_name,
        "start_cv": start_cv,
    }
    return UmbrellaResult(
        centers=c,
        k=float(k),
        kT=kT,
        cv=[samples[w] for w in range(len(c))],
        potential_energy=[energies[w] for w in range(len(c))],
        g=g,
        n_independent=n_k,
        order=[w for w, _ in plan],
        wall_time=time.perf_counter() - t0,
        settings=settings,
        mbar=mbar,
        _x_n=x_n,
    )


# ============================================================================ replica exchange
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


def replica_exchange(
    system: System,
    temperatures: Sequence[float],
    n_steps: int,
    exchange_interval: int = 100,
    report_interval: int = 500,
    n_equilibration: int = 20_000,
    timestep: float = 0.001,
    friction: float = 1.0,
    seed: int = 0,
    target_temperature: float | None = None,
    out: str | os.PathLike[str] | None = None,
    platform: str = "auto",
    threads: int | None = 1,
    positions: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    center: bool = True,
    flush_every: int = 1000,
) -> REMDResult:
    """Temperature replica exchange MD; records the replica at ``target_temperature``.

    Every ``exchange_interval`` steps all replicas have moved; then neighbour pairs (even
    pairs on even exchanges, odd pairs on odd ones) swap configurations with Metropolis
    probability min(1, exp((1/kT_i - 1/kT_j)(U_i - U_j))); velocities are rescaled by
    sqrt(T_new/T_old). Every ``report_interval`` steps (a multiple of ``exchange_interval``)
    the target replica's positions, potential energy and forces are recorded (forces are
    those of the recorded configuration, evaluated when it is saved).

    Args:
        system: the molecule (its temperature is the default target).
        temperatures: (R,) K, increasing; must contain the target temperature.
        n_steps: production steps per replica (after ``n_equilibration`` steps with
            exchanges but no recording).
        timestep: ps (1 fs default: no constraints). friction: 1/ps.
        seed: seeds velocities, Langevin streams and the swap decisions.
        out: HDF5 path written with :mod:`boltzgen.md`'s writer (mdtraj HDF5 + ``/forces``,
            system spec and settings in ``/boltzgen_md``); read back with
            :func:`boltzgen.md.load_md`.
        platform: "auto" = :func:`fastest_platform`; threads: CPU threads per replica.
        positions: start (n_atoms, 3) nm; every replica starts there (energy-minimised).
        progress: ``progress(steps_done, n_steps_total)`` including equilibration.
        center: store frames with their centroid at the origin (as :func:`simulate`).

    Returns: :class:`REMDResult`.
    """
    t0 = time.perf_counter()
    temps = np.asarray(temperatures, dtype=np.float64)
    if temps.ndim != 1 or len(temps) < 2:
        raise InputError("replica exchange needs at least 2 temperatures")
    if not np.all(temps > 0) or not np.all(np.diff(temps) > 0):
        raise InputError(f"temperatures must be positive and increasing, got {temps.tolist()}")
    target = float(system.temperature if target_temperature is None else target_temperature)
    hits = np.flatnonzero(np.isclose(temps, target, rtol=0, atol=1e-6))
    if len(hits) != 1:
        raise InputError(f"the target temperature {target} K is not in {temps.tolist()}")
    it = int(hits[0])
    n_steps, exchange_interval = int(n_steps), int(exchange_interval)
    report_interval, n_equilibration = int(report_interval), int(n_equilibration)
    if exchange_interval < 1 or report_interval < exchange_interval:
        raise InputError("need report_interval >= exchange_interval >= 1")
    if report_interval % exchange_interval:
        raise InputError("report_interval must be a multiple of exchange_interval")
    if n_steps < report_interval or n_equilibration < 0:
        raise InputError("need n_steps >= report_interval and n_equilibration >= 0")
    check_langevin_settings(timestep, friction)
    platform_name = fastest_platform(system, platform)
    rng = np.random.default_rng(seed)
    beta = 1.0 / (GAS_CONSTANT * temps)

    reps = []  # (context, integrator) per temperature
    for r, t in enumerate(temps):
        integ = langevin_integrator(float(t), friction, timestep, seed * 1000 + r)
        reps.append((make_context(system, integ, platform_name, threads=threads), integ))
    start = system.start_positions(positions)
    ctx0 = reps[0][0]
    ctx0.setPositions(start)
    openmm.LocalEnergyMinimizer.minimize(ctx0)
    start = ctx0.getState(getPositions=True).getPositions(asNumpy=True)._value
    for r, (ctx, _) in enumerate(reps):
        ctx.setPositions(start)
        ctx.setVelocitiesToTemperature(float(temps[r]) * unit.kelvin, openmm_seed(seed * 1000 + r))
    label = np.arange(len(temps))  # which walker sits at temperature r
    n_pairs = len(temps) - 1
    accepted = np.zeros(n_pairs, dtype=np.int64)
    attempts = np.zeros(n_pairs, dtype=np.int64)

    n_frames = n_steps // report_interval
    cycles_eq = -(-n_equilibration // exchange_interval)
    per_frame = report_interval // exchange_interval
    total_steps = (cycles_eq + n_frames * per_frame) * exchange_interval
    metadata = langevin_metadata(
        method="temperature replica exchange",
        temperature_K=target,
        temperatures_K=temps.tolist(),
        exchange_interval_steps=exchange_interval,
        timestep_ps=float(timestep),
        friction_per_ps=float(friction),
        report_interval_steps=report_interval,
        n_steps=n_steps,
        n_equilibration_steps=cycles_eq * exchange_interval,
        seed=int(seed),
        minimized=True,
        centered=bool(center),
        platform=platform_name,
    )
    writer = TrajectoryWriter(out, system, metadata) if out is not None else None
    xyz = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
    forces = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
    energy = np.empty(n_frames)
    times = np.empty(n_frames)
    walker = np.empty(n_frames, dtype=np.int64)
    cycle = 0

    def run_cycle() -> None:
        nonlocal cycle
        for _, integ in reps:
            integ.step(exchange_interval)
        states = [
            ctx.getState(getEnergy=True, getPositions=True, getVelocities=True) for ctx, _ in reps
        ]
        u = np.array([s.getPotentialEnergy()._value for s in states])
        if not np.isfinite(u).all():
            raise InputError(
                f"REMD blew up (non-finite energy at T = {temps[~np.isfinite(u)].tolist()} K); "
                "use a smaller timestep or lower temperatures"
            )
        for i in range(cycle % 2, n_pairs, 2):
            attempts[i] += 1
            log_acc = (beta[i] - beta[i + 1]) * (u[i] - u[i + 1])
            if log_acc >= 0 or rng.random() < math.exp(log_acc):
                accepted[i] += 1
                si, sj = states[i], states[i + 1]
                scale = math.sqrt(temps[i + 1] / temps[i])
                reps[i][0].setPositions(sj.getPositions(asNumpy=True))
                reps[i][0].setVelocities(sj.getVelocities(asNumpy=True) / scale)
                reps[i + 1][0].setPositions(si.getPositions(asNumpy=True))
                reps[i + 1][0].setVelocities(si.getVelocities(asNumpy=True) * scale)
                states[i], states[i + 1] = sj, si
                label[i], label[i + 1] = label[i + 1], label[i]
        cycle += 1

    steps_done = 0
    buf_start = 0
    try:
        for _ in range(cycles_eq):
            run_cycle()
            steps_done += exchange_interval
            if progress is not None and cycle % 100 == 0:
                progress(steps_done, total_steps)
        for f in range(n_frames):
            for _ in range(per_frame):
                run_cycle()
            steps_done += report_interval
            st = reps[it][0].getState(getPositions=True, getEnergy=True, getForces=True)
            pos = st.getPositions(asNumpy=True)._value
            xyz[f] = pos - pos.mean(axis=0) if center else pos
            forces[f] = st.getForces(asNumpy=True)._value
            energy[f] = st.getPotentialEnergy()._value
            times[f] = (f + 1) * report_interval * timestep
            walker[f] = label[it]
            if writer is not None and f + 1 - buf_start >= flush_every:
                writer.append(xyz, times, energy, forces, buf_start, f + 1)
                buf_start = f + 1
            if progress is not None:
                progress(steps_done, total_steps)
        if writer is not None:
            writer.append(xyz, times, energy, forces, buf_start, n_frames)
    finally:
        if writer is not None:
            writer.close()
    with np.errstate(invalid="ignore"):
        acceptance = np.where(attempts > 0, accepted / np.maximum(attempts, 1), np.nan)
    settings = dict(metadata)
    return REMDResult(
        trajectory=mdtraj.Trajectory(xyz, system.topology, time=times),
        potential_energy=energy,
        forces=forces,
        temperatures=temps,
        target_index=it,
        acceptance=acceptance,
        n_attempts=attempts,
        replica_of_frame=walker,
        wall_time=time.perf_counter() - t0,
        settings=settings,
    )
