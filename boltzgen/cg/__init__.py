"""Coarse-graining by flow matching (Koehler et al., JCTC 2023) and classical force matching.

* :mod:`~boltzgen.cg.mapping` - :class:`Mapping` (slice mappings, the constraint-aware slice
  force map), ``Mapping.backbone(system)``.
* :mod:`~boltzgen.cg.system` - :class:`CGSystem` (bead topology, temperature, masses).
* :mod:`~boltzgen.cg.teacher` - :class:`CGFlow` (smooth flow on the CG internal coordinates,
  trained by maximum likelihood), :func:`teacher_forces` (kT grad log q with an outlier filter).
* :mod:`~boltzgen.cg.forcefield` - :class:`CGForceField` (MLP on invariant features + harmonic
  priors), :func:`fit_forces` (force matching, optionally with energy matching).
* :mod:`~boltzgen.cg.distill` - the teacher stage of flow matching: state calibration,
  balanced teacher samples, energy targets (keeps the balance between backbone basins).
* :mod:`~boltzgen.cg.basins` - basin shares stage by stage, transitions per walker, balanced
  and weighted CG MD starts.
* :mod:`~boltzgen.cg.md` - :func:`simulate_cg` (batched Langevin BAOAB), :class:`CGMDError`.
* :mod:`~boltzgen.cg.metrics` - 60 x 60 dihedral histograms, KL, PMF MSE, dF, :func:`evaluate`.
* :mod:`~boltzgen.cg.plots` - :func:`fes_plot`.
* :mod:`~boltzgen.cg.pipeline` - :func:`train_and_simulate` (train, simulate, score) and
  :func:`run_simulation` with :class:`CGConfig` (``run_pipeline``: its deprecated name).

Units: nm, kJ/mol, kJ/mol/nm, K, ps, g/mol.
"""

from __future__ import annotations

from boltzgen.cg.forcefield import CGForceField, fit_forces
from boltzgen.cg.frames import FrameWeightError, load_weighted_frames
from boltzgen.cg.mapping import Mapping
from boltzgen.cg.md import CGMDError, CGTrajectory, simulate_cg
from boltzgen.cg.metrics import (
    delta_f,
    dihedral_histogram,
    evaluate,
    kl_divergence,
    pmf_mse,
    unreached_mass,
)
from boltzgen.cg.pipeline import (
    CGConfig,
    load_frames,
    run_pipeline,
    run_simulation,
    simulate_and_score,
    train_and_simulate,
)
from boltzgen.cg.plots import fes_plot
from boltzgen.cg.system import CGSystem, dihedrals
from boltzgen.cg.teacher import CGFlow, TeacherForces, teacher_forces

__all__ = [
    "CGConfig",
    "CGFlow",
    "CGForceField",
    "CGMDError",
    "CGSystem",
    "CGTrajectory",
    "FrameWeightError",
    "Mapping",
    "TeacherForces",
    "delta_f",
    "dihedral_histogram",
    "dihedrals",
    "evaluate",
    "fes_plot",
    "fit_forces",
    "run_simulation",
    "simulate_and_score",
    "kl_divergence",
    "load_frames",
    "load_weighted_frames",
    "pmf_mse",
    "run_pipeline",
    "simulate_cg",
    "teacher_forces",
    "train_and_simulate",
    "unreached_mass",
]
