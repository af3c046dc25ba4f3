"""``refine``: annealed SMC from a proposal's draws to the Boltzmann target (see the package
docstring): the arguments are checked once, then one SMC run
(:class:`~boltzgen.refinement.run.SMCRun`) or one per stratum
(:func:`~boltzgen.refinement.stratified.refine_stratified`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError, ShapeError
from boltzgen.refinement.results import RefinedSamples, SMCResult
from boltzgen.refinement.run import SMCRun, smc_settings
from boltzgen.refinement.stratified import refine_stratified
from boltzgen.samples import Samples

__all__ = ["refine"]


def _energy_and_log_q(energy: Any, log_q: Any) -> tuple[Callable, Callable]:
    """The energy and the proposal's log density as callables (a BoltzmannGenerator gives
    both; an object with ``log_prob`` gives log q)."""
    if hasattr(energy, "log_prob") and hasattr(energy, "energy"):  # a BoltzmannGenerator
        if log_q is None:
            log_q = energy.log_prob
        energy = energy.energy
    if log_q is not None and not callable(log_q) and hasattr(log_q, "log_prob"):
        log_q = log_q.log_prob
    if not callable(energy):
        raise InputError(f"energy must be callable, got {type(energy).__name__}")
    if log_q is None or not callable(log_q):
        raise InputError(
            "refine needs the proposal's log density as a callable: log_q=gen.log_prob "
            "(or pass the BoltzmannGenerator itself as the energy)"
        )
    return energy, log_q


def _particles(samples: Any) -> tuple[Samples | None, torch.Tensor]:
    """(the Samples given, if any; the positions as a float64 (N, ...) tensor copy)."""
    template: Samples | None = samples if isinstance(samples, Samples) else None
    if template is not None:
        x = torch.as_tensor(template.positions, dtype=torch.float64).clone()
    else:
        x = torch.as_tensor(
            samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else samples,
            dtype=torch.float64,
        ).clone()
    if x.dim() < 2 or len(x) < 1:
        raise ShapeError(f"samples must be (N, ...) with N >= 1, got shape {tuple(x.shape)}")
    return template, x


def refine(
    samples: Any,
    energy: Any,
    log_q: Any = None,
    *,
    n_steps: int = 5,
    schedule: str | Sequence[float] = "adaptive",
    cess_target: float = 0.8,
    n_levels: int = 10,
    max_levels: int = 200,
    resample_threshold: float = 0.5,
    kernel: str = "hmc",
    n_leapfrog: int = 5,
    step_size: float | None = None,
    target_acceptance: float | None = None,
    adapt_step_size: bool = True,
    n_islands: int | None = None,
    batch_size: int | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    strata: Callable[[np.ndarray], np.ndarray] | None = None,
    strata_mass: dict[Any, float] | None = None,
    strata_mass_draws: int | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> RefinedSamples | SMCResult:
    """Refine draws of a proposal q toward p ∝ exp(-u) by annealed SMC (see the package docs).

    Args:
        samples: :class:`~boltzgen.samples.Samples` drawn from q (only the positions are
            used; their log-weights are ignored: the particles are taken as exact draws of q),
            or an array / tensor (N, ...) of such draws (any event shape, e.g. (N, d)).
        energy: callable torch (N, ...) -> (N,) reduced energy u (kT), differentiable by
            autograd (e.g. :class:`~boltzgen.energy.EnergyModel`; +inf = invalid), or a
            :class:`~boltzgen.generator.model.BoltzmannGenerator` (then ``energy=gen.energy``
            and ``log_q`` defaults to ``gen.log_prob``).
        log_q: the proposal's normalized log density, callable torch (N, ...) -> (N,)
            (differentiable; -inf outside its support), or an object with ``log_prob``.
        n_steps: MCMC sweeps per level (0: importance reweighting with resampling only).
        schedule: ``"adaptive"`` (each next b by bisection so that the conditional ESS of the
            incremental weights equals ``cess_target``), ``"linear"`` / ``"geometric"``
            (``n_levels`` levels), or an increasing sequence of betas ending at 1.
        max_levels: adaptive schedule cap; the level that reaches it jumps to b = 1 (warns).
        resample_threshold: resample (systematic) when the Kish ESS fraction falls below it
            (per island).
        n_islands: the particles form this many islands (particle ``i`` in island
            ``i % n_islands``) that resample independently; the spread of the islands' Z
            estimates gives ``log_z_err``. Default min(16, max(2, N // 32)).
        kernel: ``"hmc"`` (``n_leapfrog`` leapfrog steps) or ``"mala"``.
        step_size: initial step (units of the positions, nm); default from the gradient at
            the first level. Adapted toward ``target_acceptance`` after every sweep unless
            ``adapt_step_size=False``.
        batch_size: evaluate energies and log q in chunks of this many configurations.
        time_limit: wall seconds for the whole refinement (adaptive schedule only): the
            first level after it jumps to b = 1 (warns; ``history["stopped_at_time_limit"]``),
            as at ``max_levels``. With strata each stratum gets a share of what is left in
            proportion to its particles.
        seed: seeds the momenta, jitter, Metropolis tests and resampling (deterministic).
        strata: ``strata(positions (N, ...) numpy) -> (N,)`` labels (e.g. the sign pattern
            of the backbone phi angles): *stratified* refinement. Each stratum k (the
            particles with one label) is refined by its own SMC run toward p restricted to
            the stratum (moves that change the label are rejected, which keeps the
            restricted target invariant), so a minor basin keeps its particles instead of
            losing them to resampling against the major one, and every basin gets its own
            schedule. Its run estimates Z_k / q(k) (the particles are draws of q restricted
            to k); the final log-weights add log(q(k) N / N_k), so ``mean exp(log w)``
            estimates Z = sum_k Z_k and the weights are consistent for E_p restricted to
            the union of the strata (mass in strata q never visits is missed, as with any
            importance sampler). ``history["strata"]`` holds each stratum's figures.
        strata_mass: q(k) per label; default N_k / N from the particles themselves. Give
            it from many more (cheap) proposal draws to allocate particles freely across
            strata (e.g. equal numbers per basin); ``strata_mass_draws`` is that number
            of draws, used for the binomial error of q(k) in ``log_z_err``.
        progress: ``progress(fraction, message)`` after every level (fraction = beta; with
            strata, the strata's shares of the particles).

    Returns:
        :class:`RefinedSamples` for Samples input (float32 positions (N, n_atoms, 3), topology
        kept), else :class:`SMCResult`. Both carry ``positions``, ``log_q`` and
        ``reduced_energy`` at the final positions, final ``log_weights``, ``ess`` (Kish
        fraction of the final weights: 1 right after a resampling, so also look at
        ``history["ess"]``), ``log_z``, ``log_z_err``, ``n_energy_evals`` and ``history``:

        * ``betas`` (K + 1, from 0), and per level k = 1..K: ``ess`` (Kish fraction after
          reweighting, before resampling), ``resampled``, ``acceptance`` (mean acceptance
          probability over the level's sweeps), ``step_size`` (at the level's first sweep),
          ``log_z`` (running estimate), ``n_alive``, ``n_energy_evals`` (cumulative);
        * ``ess_is``, ``log_z_is``: plain importance sampling from q with the same
          particles; ``n_resampling``, ``n_unique_ancestors`` (distinct input particles
          with descendants), ``n_log_q_evals``, and the settings used.
    """
    energy, log_q = _energy_and_log_q(energy, log_q)
    settings = smc_settings(
        n_steps=n_steps,
        schedule=schedule,
        cess_target=cess_target,
        n_levels=n_levels,
        max_levels=max_levels,
        resample_threshold=resample_threshold,
        kernel=kernel,
        n_leapfrog=n_leapfrog,
        step_size=step_size,
        target_acceptance=target_acceptance,
        adapt_step_size=adapt_step_size,
        n_islands=n_islands,
        batch_size=batch_size,
        time_limit=time_limit,
    )
    template, x = _particles(samples)
    if strata is not None:
        return refine_stratified(
            x,
            template,
            energy,
            log_q,
            strata,
            strata_mass,
            strata_mass_draws,
            seed,
            settings,
            progress,
        )
    run = SMCRun(x, template, energy, log_q, settings, seed, progress=progress, stacklevel=2)
    return run.run()
