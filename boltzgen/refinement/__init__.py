r"""Annealed refinement of proposal samples toward the Boltzmann distribution (SMC / AIS).

``refine(samples, energy, log_q=gen.log_prob)`` moves draws of a proposal q (a Boltzmann
generator's flow) toward the target p(x) ∝ exp(-u(x)) (u = reduced energy, kT) through the
tempered densities

    log pi_b(x) = (1 - b) log q(x) - b u(x),        0 = b_0 < b_1 < ... < b_K = 1,

and returns weighted samples of the target together with an estimate of log Z, Z = ∫ exp(-u).

Algorithm (a sequential Monte Carlo sampler with tempering: Neal 2001 "Annealed importance
sampling"; Del Moral, Doucet & Jasra 2006; adaptive tempering as in Zhou, Johansen & Aston
2016). N particles x_i ~ q start with log-weight 0. For level k = 1..K:

1. *Reweight*: ``log w_i += (b_k - b_{k-1}) r(x_i)`` with ``r = -u - log q`` (the log of
   pi_k / pi_{k-1} up to constants), evaluated at the particles produced at level k-1.
2. *Resample* (systematic) when the Kish ESS fraction of the weights drops below
   ``resample_threshold`` (or holds a dead particle). The particles form ``n_islands`` fixed
   groups (islands) that are resampled separately: within an island, particles are copied in
   proportion to their weights and every log-weight is set to the log of the island's *mean*
   weight, so the island's Z estimate (its mean weight) is unchanged.
3. *Move*: ``n_steps`` sweeps of a Markov kernel that leaves pi_{b_k} invariant.

Why the weights are unbiased. The move at level k leaves pi_k invariant, so by the extended
state-space argument of AIS the product of incremental ratios pi_k(x_{k-1}) / pi_{k-1}(x_{k-1})
has expectation Z_K / Z_0 = ∫ exp(-u) dx / ∫ q dx = Z (q is normalized). Resampling with
weights reset to their mean keeps the estimator ``Z_hat = mean_i exp(log w_i)`` unbiased
(standard SMC; Del Moral 2004), and ``sum_i W_i f(x_i)`` (W = normalized final weights) is a
consistent estimate of E_p[f]. Returned: ``log_weights`` = the final log w (equal within an
island after a final resampling), ``log_z = log Z_hat`` (Z_hat is unbiased for Z, so log Z_hat
is biased low by about err^2 / 2) and ``log_z_err``, the relative standard error of Z_hat
estimated from the spread of the islands' estimates (independent SMC runs given the schedule;
"island particle models", Vergé et al. 2015). A genealogy-based estimate (Lee & Whiteley 2018)
was tried and rejected: it assumes multinomial resampling and underestimates the error, down
to zero, with systematic resampling. Without any resampling the island spread estimates the
same quantity as the importance sampling formula ``sqrt((1/ESS - 1) / N)`` of
:func:`boltzgen.analysis.log_partition`. With the adaptive schedule (the default) the levels
are chosen from all particles together, which adds an O(1/N) bias and a weak dependence
between islands, as usual for adaptive SMC. Particles that descend from one input particle
are correlated: errors of reweighted observables should resample islands or ancestors
(``extra["island"]``, ``extra["ancestor"]`` of :class:`RefinedSamples`), not particles.

Which Z. ``Z`` is relative to the measure on which q is a normalized density. For a
:class:`~boltzgen.generator.model.BoltzmannGenerator` with ``rigid="remove"`` that is the
Cartesian space modulo rigid-body motion: ``Z`` is the configurational integral divided by the
rigid-body volume 8 pi^2 V (see :mod:`boltzgen.generator.model`). The constant cancels from
weights, ESS and free-energy differences.

Markov kernel. Hamiltonian Monte Carlo in the positions as given (nm for molecules), identity
mass matrix, ``n_leapfrog`` leapfrog steps with the step size jittered by +-20 % per particle
and sweep (``kernel="hmc"``), or MALA (``kernel="mala"``: identical to HMC with one leapfrog
step and no jitter). The Metropolis test uses pi_b exactly; the gradient only steers the
proposal: leapfrog with *any* deterministic vector field is volume preserving and reversible,
so a non-finite gradient (or an energy that autograd cannot differentiate) is replaced by zero
without breaking invariance. Points where pi_b = 0 (u = +inf, e.g. clashes; or log q = -inf,
outside the flow's support, for b < 1) are rejected; at b = 1 only u matters and log q is not
evaluated during the moves. The step size is adapted after every sweep from the population's
mean acceptance probability (toward ``target_acceptance``: 0.6 for MALA, 0.7 for HMC) and
carried over to the next level; a sweep's step size depends only on earlier sweeps, so each
sweep is an exact pi_b-invariant kernel given it. When pi_b is invariant under rigid-body
motion (``rigid="remove"``), the moves also let the molecule drift and rotate slowly; every
observable of a rigid-invariant density is unaffected.

Invalid particles. A start point with u = ±inf / nan, log q = -inf / +inf / nan, or non-finite
positions gets log w = -inf (as in :class:`~boltzgen.samples.Samples`), is never moved or
evaluated again, and disappears at the next resampling. Weights are never NaN.

Cost. ``n_energy_evals`` counts configurations passed to ``energy`` (one call computes value
and gradient): N at the start, then per level and sweep one per leapfrog step and live
particle. Dead particles and trajectories that left the support are not evaluated.

The package, along its seams: :mod:`~boltzgen.refinement.results` (what a refinement returns
and its files), :mod:`~boltzgen.refinement.schedule` (the tempering levels),
:mod:`~boltzgen.refinement.kernels` (the energy evaluator and the HMC / MALA moves),
:mod:`~boltzgen.refinement.run` (one SMC run, level by level),
:mod:`~boltzgen.refinement.stratified` (one run per stratum, merged),
:mod:`~boltzgen.refinement.smc` (:func:`refine`: the arguments checked, then one of the two)
and :mod:`~boltzgen.refinement.planning` (refinement by backbone state within a time budget,
and dF from the strata).
"""

from __future__ import annotations

from boltzgen.refinement.planning import (
    measure_rates,
    plan_refinement,
    refine_by_backbone_state,
    refine_within,
    strata_free_energy,
    strata_state_free_energies,
    stratified_allocation,
)
from boltzgen.refinement.results import RefinedSamples, SMCResult
from boltzgen.refinement.run import systematic_resample
from boltzgen.refinement.schedule import predicted_levels
from boltzgen.refinement.smc import refine

__all__ = [
    "RefinedSamples",
    "SMCResult",
    "measure_rates",
    "plan_refinement",
    "predicted_levels",
    "refine",
    "refine_by_backbone_state",
    "refine_within",
    "strata_free_energy",
    "strata_state_free_energies",
    "stratified_allocation",
    "systematic_resample",
]
