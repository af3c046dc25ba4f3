"""Umbrella sampling + MBAR along a dihedral, on any :class:`boltzgen.System`.

Why: plain MD of alanine dipeptide at 300 K (vacuum) practically never crosses to phi > 0
(see ``shared/REFERENCES.md``), so no free-energy reference can come from it.

:func:`umbrella_sampling` restrains a dihedral to a ladder of centres with a periodic harmonic
bias ``0.5 k d^2``, ``d = min(|theta - theta0|, 2 pi - |theta - theta0|)``. Windows are walked
outward from the unbiased minimum in both directions, each starting from the last frame of its
neighbour, so slow orthogonal degrees of freedom (psi) relax continuously instead of being
trapped in the wrong basin. Samples are subsampled by their statistical inefficiency and
combined with MBAR (pymbar) into the unbiased profile and state free energies with analytical
MBAR uncertainties. The MD runs on :class:`boltzgen.simulation.Simulation`; this module adds
only the restraint force and the window walk.

Units at the boundary: nm, ps, K, kJ/mol, radians; free energies in kT.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openmm
import openmm.unit as unit

from boltzgen.analysis import in_state
from boltzgen.cv import Dihedral
from boltzgen.errors import InputError
from boltzgen.simulation import LangevinConfig, Simulation, openmm_copy, resolve_langevin
from boltzgen.systems import GAS_CONSTANT, System

__all__ = ["UmbrellaResult", "umbrella_sampling"]

ProgressFn = Callable[[int, int], None]
logging.getLogger("pymbar").setLevel(logging.ERROR)  # its import banners are not our warnings
_TWO_PI = 2.0 * math.pi
_BIAS_GROUP = 31
_UNBIASED = (1 << _BIAS_GROUP) - 1  # force groups 0..30: everything but the umbrella bias


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
    timestep: float | None = None,
    friction: float | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    platform: str | None = None,
    threads: int | None = None,
    positions: np.ndarray | None = None,
    n_minimum_search: int = 20_000,
    progress: ProgressFn | None = None,
    langevin: LangevinConfig | None = None,
) -> UmbrellaResult:
    """Umbrella sampling along a dihedral with MBAR analysis.

    Args:
        system: what to simulate (force field, solvent; its temperature unless
            ``langevin.temperature`` is set).
        cv_atoms: 4 atom indices of the dihedral (e.g. ``boltzgen.cv.dihedral(s, "phi").atoms``).
        centers: (K,) window centres, rad (any order; e.g. ``np.linspace(-pi, pi, K,
            endpoint=False)``). Neighbouring windows must overlap: choose ``k`` so that
            sqrt(kT/k) is about the spacing or more.
        k: spring constant, kJ/mol/rad^2; bias 0.5 k d^2 with d the periodic angle distance.
        n_steps_per_window: production steps per window (after ``n_equilibration`` steps).
        report_interval: steps between recorded CV values.
        langevin: :class:`boltzgen.simulation.LangevinConfig` (default: 1 fs, 1/ps, platform
            "auto", seed 0, one CPU thread); its seed seeds the velocities and every window's
            Langevin stream. The old keywords timestep, friction, temperature, seed, platform
            and threads still work (deprecated).
        positions: start (n_atoms, 3) nm (default: the system's, energy-minimised).
        n_minimum_search: unbiased steps before the first window, to find where the unbiased
            system sits (the walk starts at the window nearest the CV there).
        progress: ``progress(windows_done, n_windows)``.

    Returns: :class:`UmbrellaResult` (``.free_energy_difference(a, b)``, ``.profile()``).
    """
    cfg = resolve_langevin(
        langevin,
        LangevinConfig(),
        "umbrella_sampling",
        timestep=timestep,
        friction=friction,
        temperature=temperature,
        seed=seed,
        platform=platform,
        threads=threads,
    )
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

    omm_system = openmm_copy(system)
    bias = openmm.CustomTorsionForce(
        "0.5*k_umb*d^2; d = min(dt, 2*pi - dt); dt = abs(theta - theta0); pi = 3.141592653589793"
    )
    bias.addGlobalParameter("k_umb", float(k))
    bias.addGlobalParameter("theta0", 0.0)
    bias.addTorsion(*atoms, [])
    bias.setForceGroup(_BIAS_GROUP)
    omm_system.addForce(bias)
    sim = Simulation(system, cfg, openmm_system=omm_system)
    kT = GAS_CONSTANT * sim.temperature
    cv = Dihedral(atoms)
    sim.context.setParameter("k_umb", 0.0)
    sim.start(positions)
    sim.step(int(n_minimum_search))
    start_cv = float(cv(sim.positions())[0])

    plan = _umbrella_plan(c, start_cv)
    samples, energies = _run_windows(
        sim, cv, c, float(k), plan, int(n_equilibration), n_steps_per_window, report_interval,
        progress,
    )  # fmt: skip
    g, n_k, x_n, mbar = _mbar_fit(samples, energies, c, float(k), kT)
    settings = {
        "cv_atoms": list(atoms),
        "n_windows": len(c),
        "k_kJ_per_mol_rad2": float(k),
        "n_steps_per_window": n_steps_per_window,
        "n_equilibration": int(n_equilibration),
        "report_interval": report_interval,
        "timestep_ps": cfg.timestep,
        "friction_per_ps": cfg.friction,
        "temperature_K": sim.temperature,
        "seed": cfg.seed,
        "platform": sim.platform,
        "start_cv": start_cv,
    }
    return UmbrellaResult(
        centers=c,
        k=float(k),
        kT=kT,
        cv=samples,
        potential_energy=energies,
        g=g,
        n_independent=n_k,
        order=[w for w, _ in plan],
        wall_time=time.perf_counter() - t0,
        settings=settings,
        mbar=mbar,
        _x_n=x_n,
    )


def _run_windows(
    sim: Simulation,
    cv: Dihedral,
    centers: np.ndarray,
    k: float,
    plan: list[tuple[int, int | None]],
    n_equilibration: int,
    n_steps_per_window: int,
    report_interval: int,
    progress: ProgressFn | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run the windows in ``plan`` order, each from its predecessor's last state and with its
    own Langevin stream (seed * 1000 + window + 1); per window (in centre order) the CV (rad)
    and the unbiased potential energy (kJ/mol) every ``report_interval`` steps."""
    seed = sim.config.seed
    last_state: dict[int, openmm.State] = {}
    samples: dict[int, np.ndarray] = {}
    energies: dict[int, np.ndarray] = {}
    n_rec = n_steps_per_window // report_interval
    for i, (w, pred) in enumerate(plan):
        if pred is not None:
            sim.context.setState(last_state[pred])
        sim.context.setParameter("theta0", float(centers[w]))
        sim.context.setParameter("k_umb", k)
        sim.reseed(seed * 1000 + w + 1)
        sim.step(n_equilibration)
        vals, ener = np.empty(n_rec), np.empty(n_rec)

        def record(j: int, vals: np.ndarray = vals, ener: np.ndarray = ener) -> None:
            st = sim.context.getState(positions=True, energy=True, groups=_UNBIASED)
            vals[j] = cv(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))[0]
            ener[j] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

        sim.run(n_rec * report_interval, report_interval, report=record)
        samples[w], energies[w] = vals, ener
        last_state[w] = sim.context.getState(positions=True, velocities=True)
        if progress is not None:
            progress(i + 1, len(plan))
    order = range(len(centers))
    return [samples[w] for w in order], [energies[w] for w in order]


def _mbar_fit(
    samples: list[np.ndarray], energies: list[np.ndarray], c: np.ndarray, k: float, kT: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """(g, n_k, x_n, MBAR) of the windows' CV samples: subsampled by their statistical
    inefficiency g, the larger of those of the CV (signed periodic distance from the centre)
    and of the unbiased potential energy, which also sees slow orthogonal motions (e.g. psi
    flips at fixed phi) that the restrained CV alone hides."""
    import pymbar

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
    u_kn = 0.5 * k * _periodic_distance(x_n[None, :], c[:, None]) ** 2 / kT
    return g, n_k, x_n, pymbar.MBAR(u_kn, n_k)
