"""Well-tempered metadynamics over one to three dihedrals, then sampling with the learned bias
frozen, reweighted exactly: a free-energy reference that converges in every biased dihedral.

Why two phases: the bias of running metadynamics changes with time, so reweighting its frames
needs an estimate of the time-dependent offset c(t) (Tiwary & Parrinello) and is only
asymptotically right. Here metadynamics only *learns* a bias V(s) (well-tempered, so V tends to
-(1 - 1/gamma) F(s) and flattens the barriers); the second phase runs plain Langevin MD with V
fixed, which samples exp(-(U + V)/kT) exactly, so each frame's weight is exp(+V/kT) with no
approximation. A poor V only costs efficiency (a lower effective sample size), never bias.
Biasing (phi, psi) together equilibrates both, which 1-D umbrella windows along phi do not;
for a peptide, biasing every residue's state dihedral (:func:`boltzgen.cv.state_dihedrals`)
gives a reference in each of them.

Uses OpenMM's ``openmm.app.Metadynamics`` (grid bias, well-tempered heights) on the one MD
driver, :class:`boltzgen.simulation.Simulation`, which supplies what ``Metadynamics.step``
reads of an ``app.Simulation`` (context, integrator, currentStep, step). Units at the
boundary: nm, ps, K, kJ/mol, radians; free energies in kT.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from boltzgen.analysis import free_energy_difference, free_energy_surface, kish_ess
from boltzgen.cv import Dihedral
from boltzgen.errors import InputError
from boltzgen.simulation import (
    LangevinConfig,
    Simulation,
    openmm_copy,
    resolve_langevin,
    run_in_chunks,
)
from boltzgen.systems import GAS_CONSTANT, System

__all__ = ["MetadynamicsResult", "metadynamics"]

ProgressFn = Callable[[int, int], None]


@dataclass
class MetadynamicsResult:
    """Output of :func:`metadynamics` (frames of the fixed-bias phase only).

    cv: (n, d) values of the biased dihedrals (rad, d = 1..3); positions: (n, n_atoms, 3) nm float32;
    bias: (n,) frozen bias energy of each frame, kJ/mol; potential_energy: (n,) unbiased,
    kJ/mol; kT: kJ/mol; names: the dihedrals' names; metadynamics_fes: the learning phase's own
    free-energy estimate -(gamma/(gamma-1)) V on OpenMM's grid (kT; axes in reverse CV order,
    as OpenMM stores it), a cross-check of the reweighted one;
    wall_time: s (both phases); settings: the arguments.
    """

    cv: np.ndarray
    positions: np.ndarray
    bias: np.ndarray
    potential_energy: np.ndarray
    kT: float
    names: list[str]
    metadynamics_fes: np.ndarray
    wall_time: float
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def log_weights(self) -> np.ndarray:
        """(n,) exact importance log-weights V/kT of the fixed-bias frames (unnormalised)."""
        return self.bias / self.kT

    @property
    def ess(self) -> float:
        """Kish effective sample size fraction of the reweighted frames (ignores correlation)."""
        return kish_ess(self.log_weights)

    def block_size(self, n_blocks: int = 40) -> int:
        """Frames per bootstrap block: the record cut into ``n_blocks`` contiguous blocks."""
        return max(1, len(self.bias) // int(n_blocks))

    def free_energy_difference(
        self,
        cv: int | Callable[[np.ndarray], Any],
        state_a: Sequence[float],
        state_b: Sequence[float],
        n_bootstrap: int = 200,
        n_blocks: int = 40,
        seed: int = 0,
    ) -> tuple[float, float]:
        """dF = F(A) - F(B) in kT of the unbiased ensemble along a biased dihedral (its index)
        or any CV of the positions (a callable, e.g. another :class:`boltzgen.cv.Dihedral`),
        with a moving-block bootstrap error (``n_blocks`` blocks of the time series)."""
        values = self.cv[:, cv] if isinstance(cv, int) else np.asarray(cv(self.positions))
        return free_energy_difference(
            values,
            values,
            state_a,
            state_b,
            n_bootstrap=n_bootstrap,
            seed=seed,
            block_size=self.block_size(n_blocks),
            log_weights=self.log_weights,
            period=2.0 * math.pi,
        )

    def sign_free_energy_by_part(self, cv: int, n_parts: int) -> list[float]:
        """dF = F(CV >= 0) - F(CV < 0) in kT of the biased dihedral ``cv`` (index) from each of
        ``n_parts`` consecutive parts of the record (a convergence check: the parts should
        agree within their errors); inf where a part holds no weight on one side."""
        n, out = len(self.bias), []
        for i in range(int(n_parts)):
            part = slice(i * n // n_parts, (i + 1) * n // n_parts)
            lw, v = self.log_weights[part], self.cv[part, cv]
            w = np.exp(lw - lw.max())
            with np.errstate(divide="ignore"):
                out.append(float(np.log(w[v < 0].sum()) - np.log(w[v >= 0].sum())))
        return out

    def free_energy_surface(
        self,
        dims: Sequence[int] = (0, 1),
        bins: int = 60,
        n_bootstrap: int = 100,
        n_blocks: int = 40,
    ) -> tuple[Any, np.ndarray, np.ndarray]:
        """Unbiased F (kT, min 0) over one or two of the biased dihedrals (``dims``, indices;
        a single CV run uses its only one) on [-pi, pi]: (centers, F, F_err) as
        :func:`boltzgen.analysis.free_energy_surface`."""
        dims = [int(i) for i in dims if int(i) < self.cv.shape[1]] or [0]
        cvs = self.cv[:, dims] if len(dims) == 2 else self.cv[:, dims[0]]
        rng = ((-math.pi, math.pi),) * 2 if len(dims) == 2 else (-math.pi, math.pi)
        return free_energy_surface(
            cvs,
            cvs,
            bins=bins,
            range=rng,
            n_bootstrap=n_bootstrap,
            block_size=self.block_size(n_blocks),
            log_weights=self.log_weights,
        )


def metadynamics(
    system: System,
    cvs: Sequence[Dihedral],
    n_metadynamics_steps: int = 1_000_000,
    n_steps: int = 2_000_000,
    report_interval: int = 250,
    bias_factor: float = 6.0,
    height: float = 1.2,
    width: float = 0.35,
    deposit_interval: int = 500,
    timestep: float | None = None,
    friction: float | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    platform: str | None = None,
    threads: int | None = None,
    positions: np.ndarray | None = None,
    time_limit: float | None = None,
    progress: ProgressFn | None = None,
    langevin: LangevinConfig | None = None,
) -> MetadynamicsResult:
    """Learn a bias over ``cvs`` by well-tempered metadynamics, then sample with it frozen.

    Args:
        system: what to simulate (its temperature unless ``langevin.temperature`` is set).
        cvs: one to three :class:`boltzgen.cv.Dihedral` (e.g. ``boltzgen.cv.dihedral(s,
            "phi")`` and ``"psi"``), biased on a periodic grid over [-pi, pi) (90 points per
            CV for one or two, 40 for three: the whole grid is re-uploaded at every deposit).
        n_metadynamics_steps: steps of the learning phase (bias deposited every
            ``deposit_interval`` steps; frames are not kept).
        n_steps: steps of the fixed-bias phase; a frame every ``report_interval`` steps.
        bias_factor: well-tempered gamma (CVs sampled as if at gamma * T); height: initial
            Gaussian height, kJ/mol; width: Gaussian standard deviation, rad.
        langevin: :class:`boltzgen.simulation.LangevinConfig` (default: 1 fs, 1/ps, platform
            "auto", seed 0, one CPU thread); the seed seeds the velocities and the Langevin
            stream. The old keywords timestep, friction, temperature, seed, platform and
            threads still work (deprecated).
        positions: start (n_atoms, 3) nm (default: the system's, energy-minimised).
        time_limit: wall-clock seconds for both phases (setup included): each phase stops
            early when its share of the limit (in proportion to its steps) is spent, so the
            step counts become upper bounds (the cost of bias deposits, which grows with the
            grid, is then no longer a guess); at least 2 frames are always recorded.
        progress: ``progress(steps_done, steps_total)`` over both phases.

    Returns: :class:`MetadynamicsResult` (``free_energy_difference``, ``free_energy_surface``).
    """
    cfg = resolve_langevin(
        langevin,
        LangevinConfig(),
        "metadynamics",
        timestep=timestep,
        friction=friction,
        temperature=temperature,
        seed=seed,
        platform=platform,
        threads=threads,
    )
    t0 = time.perf_counter()
    cvs = list(cvs)
    if len(cvs) not in (1, 2, 3) or not all(isinstance(c, Dihedral) for c in cvs):
        raise InputError("metadynamics biases one to three boltzgen.cv.Dihedral CVs")
    for c in cvs:
        if len(set(c.atoms)) != 4 or not all(0 <= a < system.n_atoms for a in c.atoms):
            raise InputError(f"dihedral {c.name} atoms {c.atoms} are not 4 distinct atoms")
    n_metadynamics_steps, n_steps = int(n_metadynamics_steps), int(n_steps)
    report_interval, deposit_interval = int(report_interval), int(deposit_interval)
    if n_metadynamics_steps < 0 or report_interval < 1 or n_steps < report_interval:
        raise InputError("need n_metadynamics_steps >= 0 and n_steps >= report_interval >= 1")
    if deposit_interval < 1 or not bias_factor > 1 or not height > 0 or not width > 0:
        raise InputError("need deposit_interval >= 1, bias_factor > 1, height > 0, width > 0")
    temperature = cfg.temperature_of(system)
    kT = GAS_CONSTANT * temperature

    omm_system = openmm_copy(system)
    grid = 90 if len(cvs) < 3 else 40
    variables = []
    for c in cvs:
        torsion = openmm.CustomTorsionForce("theta")
        torsion.addTorsion(*c.atoms, [])
        variables.append(
            app.BiasVariable(torsion, -math.pi, math.pi, width, periodic=True, gridWidth=grid)
        )
    meta = app.Metadynamics(
        omm_system, variables, temperature * unit.kelvin, bias_factor, height, deposit_interval
    )
    bias_group = omm_system.getForce(omm_system.getNumForces() - 1).getForceGroup()
    sim = Simulation(system, cfg, openmm_system=omm_system)
    sim.start(positions)
    total = n_metadynamics_steps + n_steps
    limit = None if time_limit is None else float(time_limit)
    chunk = max(
        deposit_interval, (n_metadynamics_steps // 100) // deposit_interval * deposit_interval
    )
    n_metadynamics_steps = run_in_chunks(
        lambda k: meta.step(sim, k),
        n_metadynamics_steps,
        chunk,
        progress=progress,
        total=total,
        deadline=None if limit is None else t0 + limit * n_metadynamics_steps / max(total, 1),
    )
    pos, bias, energy = _sample_frozen(
        sim, bias_group, n_steps // report_interval, report_interval, progress,
        n_metadynamics_steps, total, None if limit is None else t0 + limit,
    )  # fmt: skip
    n_steps = len(bias) * report_interval
    cv = np.stack([c(pos) for c in cvs], axis=1)
    settings = {
        "cvs": {c.name: list(c.atoms) for c in cvs},
        "n_metadynamics_steps": n_metadynamics_steps,
        "n_steps": n_steps,
        "report_interval": report_interval,
        "bias_factor": float(bias_factor),
        "height_kJ_per_mol": float(height),
        "width_rad": float(width),
        "deposit_interval": deposit_interval,
        "timestep_ps": cfg.timestep,
        "friction_per_ps": cfg.friction,
        "temperature_K": temperature,
        "seed": cfg.seed,
        "platform": sim.platform,
    }
    return MetadynamicsResult(
        cv=cv,
        positions=pos,
        bias=bias,
        potential_energy=energy,
        kT=kT,
        names=[c.name for c in cvs],
        metadynamics_fes=np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole))
        / kT,
        wall_time=time.perf_counter() - t0,
        settings=settings,
    )


def _sample_frozen(
    sim: Simulation,
    bias_group: int,
    n_rec: int,
    report_interval: int,
    progress: ProgressFn | None,
    done_before: int,
    total: int,
    deadline: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase 2: the bias is frozen (no deposits), so frames follow exp(-(U + V)/kT) exactly.
    Up to ``n_rec`` frames (at least 2 before the deadline stops it): positions float32 nm,
    frozen bias V and unbiased energy U, kJ/mol."""
    unbiased = set(range(32)) - {bias_group}
    pos = np.empty((n_rec, sim.system.n_atoms, 3), dtype=np.float32)
    bias, energy = np.empty(n_rec), np.empty(n_rec)

    def record(j: int) -> None:
        st = sim.context.getState(positions=True, energy=True, groups=unbiased)
        pos[j] = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        energy[j] = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        b = sim.context.getState(energy=True, groups={bias_group}).getPotentialEnergy()
        bias[j] = b.value_in_unit(unit.kilojoule_per_mole)

    done = run_in_chunks(
        sim.step,
        n_rec * report_interval,
        report_interval,
        report=record,
        progress=progress,
        progress_every=max(1, n_rec // 100),
        done_before=done_before,
        total=total,
        deadline=deadline,
        min_chunks=2,
    )
    j = done // report_interval
    return pos[:j], bias[:j], energy[:j]
