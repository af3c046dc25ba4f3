"""Refinement by backbone state within a time budget, and free energies from its strata.

:func:`measure_rates` times a flow draw, an energy and one refinement evaluation;
:func:`plan_refinement` predicts each backbone state's levels from its draws' weights and finds
how many draws the budget pays for; :func:`stratified_allocation` spreads them equally over the
states; :func:`refine_by_backbone_state` runs :func:`~boltzgen.refinement.refine` with one
stratum per state; :func:`refine_within` does all of that for ``seconds``;
:func:`strata_free_energy` turns the strata's log Z into dF per residue. The ``sample`` and
``free_energy`` jobs, ``boltzgen sample --refine-seconds`` and ``boltzgen run`` use these.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from boltzgen.cv import backbone_state_labels
from boltzgen.diagnostics.thresholds import MIN_PARTICLES_PER_STRATUM
from boltzgen.jsonable import json_clean
from boltzgen.refinement.results import mean_acceptance
from boltzgen.refinement.schedule import predicted_levels
from boltzgen.refinement.smc import refine

__all__ = [
    "LEAPFROG",
    "measure_rates",
    "plan_refinement",
    "refine_by_backbone_state",
    "refine_within",
    "strata_free_energy",
    "strata_state_free_energies",
    "stratified_allocation",
]

LEAPFROG = 5  # HMC leapfrog steps per sweep in the refinement


def measure_rates(gen, positions: np.ndarray, n: int = 256) -> dict[str, float]:
    """Seconds per configuration: a flow draw (``flow_s``), an energy (``energy_s``) and one
    refinement evaluation (``energy_force_s``: energy + forces and log q with its gradient),
    measured on ``positions`` (N, n_atoms, 3) nm."""
    n = int(min(n, len(positions)))
    t0 = time.perf_counter()
    with torch.no_grad():
        gen.sample_positions(n)
    t_flow = (time.perf_counter() - t0) / n
    x = torch.as_tensor(np.asarray(positions[:n], dtype=np.float64))
    t0 = time.perf_counter()
    gen.energy(x)
    t_energy = (time.perf_counter() - t0) / n
    # one refinement evaluation: energy + forces and log q + its gradient, on other frames
    # (an energy model may cache the last batch)
    x = torch.as_tensor(np.asarray(positions[-n:], dtype=np.float64)).requires_grad_(True)
    t0 = time.perf_counter()
    gen.energy.energy_and_forces(x.detach())
    gen.log_prob(x).sum().backward()
    t_force = (time.perf_counter() - t0) / n
    return {"flow_s": t_flow, "energy_s": t_energy, "energy_force_s": t_force}


def plan_refinement(
    samples,
    system,
    seconds: float,
    eval_seconds: float,
    *,
    n_steps: int = 3,
    n_leapfrog: int = LEAPFROG,
    min_particles: int = 100,
    min_per_stratum: int = 0,
) -> dict[str, Any]:
    """How many draws a refinement by backbone state can afford in ``seconds``.

    Each state's levels are predicted from its draws' importance weights
    (:func:`~boltzgen.refinement.schedule.predicted_levels`); a particle costs levels x
    ``n_steps`` x ``n_leapfrog`` evaluations of ``eval_seconds`` (energy + forces + log q
    gradient, as measured by :func:`measure_rates`). Returns ``n_particles`` (at least
    ``min_particles`` and ``min_per_stratum`` times the number of states with two draws or
    more, or all draws; the refinement's ``time_limit`` keeps a floor the budget cannot pay
    for from overrunning it), ``levels`` per state, ``max_levels`` (twice the largest
    prediction, at least 10: the cap that keeps a badly covered state from eating the budget)
    and the ``predicted_seconds``."""
    labels = backbone_state_labels(system, samples.positions)[0].astype(str)
    lw = np.asarray(samples.log_weights)
    levels = {k: predicted_levels(lw[labels == k]) for k in np.unique(labels)}

    def cost(n: int) -> float:
        idx = stratified_allocation(labels, n)
        per_state = np.unique(labels[idx], return_counts=True)
        return float(
            sum(c * levels[k] for k, c in zip(*per_state, strict=True))
            * n_steps
            * n_leapfrog
            * eval_seconds
        )

    _, counts = np.unique(labels, return_counts=True)
    # the floor: what a verdict needs per refinable stratum (draws allowing), not only in total
    floor = max(int(min_particles), int(min_per_stratum) * int(np.sum(counts >= 2)))
    lo, hi = min(floor, len(labels)), len(labels)
    if cost(hi) <= seconds:
        lo = hi
    while hi - lo > max(1, lo // 50):  # bisection on the particle count
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= seconds else (lo, mid)
    return {
        "n_particles": int(lo),
        "levels": {str(k): int(v) for k, v in levels.items()},
        "max_levels": max(2 * max(levels.values(), default=1), 10),
        "predicted_seconds": cost(lo),
    }


def stratified_allocation(labels: np.ndarray, n: int, min_draws: int = 2) -> np.ndarray:
    """Indices of about ``n`` draws, as equal a number per stratum (label) as the draws allow.

    Strata with fewer than ``min_draws`` draws get none. Within a stratum the first draws
    are taken (the draws are i.i.d., so any fixed choice is a sample of q restricted to it).
    Equal numbers per stratum minimise the error of free-energy differences between them.
    """
    lab = np.asarray(labels).astype(str)
    keys, counts = np.unique(lab, return_counts=True)
    keep = counts >= min_draws
    keys, counts = keys[keep], counts[keep]
    take = np.zeros(len(keys), dtype=np.int64)
    left = int(n)
    open_ = list(range(len(keys)))
    while left > 0 and open_:  # water-filling: equal shares, capped by availability
        share = max(1, left // len(open_))
        for k in list(open_):
            add = min(share, counts[k] - take[k], left)
            take[k] += add
            left -= add
            if take[k] >= counts[k]:
                open_.remove(k)
            if left <= 0:
                break
    idx = [np.flatnonzero(lab == key)[: take[k]] for k, key in enumerate(keys)]
    return np.sort(np.concatenate(idx)) if idx else np.arange(0)


def refine_by_backbone_state(
    gen,
    samples,
    system,
    n_particles: int,
    *,
    n_steps: int = 3,
    n_leapfrog: int = LEAPFROG,
    max_levels: int = 200,
    time_limit: float | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
):
    """Stratified refinement (:func:`~boltzgen.refinement.refine` with ``strata``) of flow
    draws toward the Boltzmann target, one stratum per backbone state (sign pattern of
    every residue's phi, psi for proline: :func:`backbone_state_labels`).

    ``n_particles`` of ``samples`` (i.i.d. draws of ``gen``) are refined, as equal a number
    per state as the draws allow (:func:`stratified_allocation`); the proposal mass q(k) of
    each state comes from all the draws. Returns (RefinedSamples, proposal mass of states
    with too few draws to refine: that mass is missing from the result)."""
    labels = backbone_state_labels(system, samples.positions)[0].astype(str)
    keys, counts = np.unique(labels, return_counts=True)
    mass = {k: float(c) / len(labels) for k, c in zip(keys, counts, strict=True)}
    idx = stratified_allocation(labels, n_particles)
    kept = set(labels[idx])

    def strata(positions: np.ndarray) -> np.ndarray:
        return backbone_state_labels(system, positions)[0].astype(str)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # max_levels reached: in the history
        refined = refine(
            samples[idx],
            gen.energy,
            log_q=gen.log_prob,
            n_steps=n_steps,
            n_leapfrog=n_leapfrog,
            max_levels=max_levels,
            time_limit=time_limit,
            seed=seed,
            strata=strata,
            strata_mass={k: mass[k] for k in kept},
            strata_mass_draws=len(labels),
            progress=progress,
        )
    return refined, float(sum(m for k, m in mass.items() if k not in kept))


def refine_within(
    gen,
    samples,
    seconds: float,
    *,
    eval_seconds: float | None = None,
    n_steps: int = 3,
    n_leapfrog: int = LEAPFROG,
    seed: int = 0,
    min_per_stratum: int = MIN_PARTICLES_PER_STRATUM,
    progress: Callable[[float, str], None] | None = None,
):
    """Stratified refinement by backbone state (:func:`refine_by_backbone_state`) of as many
    of ``samples`` (i.i.d. draws of ``gen``) as ``seconds`` pay for (:func:`plan_refinement`
    with ``eval_seconds`` per evaluation, measured on the draws if not given), at least
    ``min_per_stratum`` particles per populated state (default: as many as the verdict needs
    to judge a state; the time limit still holds). Returns
    (RefinedSamples, summary): particles, levels (predicted and run), energy evaluations,
    acceptance, ESS before and after, surviving draws, the strata, seconds, and
    dF(CV >= 0 vs < 0) per residue's state dihedral from the strata's log Z."""
    system = gen.system
    t0 = time.perf_counter()
    if eval_seconds is None:
        ok = np.isfinite(samples.log_weights)
        frames = samples.positions[ok] if ok.any() else samples.positions
        eval_seconds = measure_rates(gen, frames)["energy_force_s"]
    rp = plan_refinement(
        samples,
        system,
        seconds,
        eval_seconds,
        n_steps=n_steps,
        n_leapfrog=n_leapfrog,
        min_per_stratum=min_per_stratum,
    )
    refined, dropped = refine_by_backbone_state(
        gen,
        samples,
        system,
        rp["n_particles"],
        n_steps=n_steps,
        n_leapfrog=n_leapfrog,
        max_levels=rp["max_levels"],
        # the plan's particle floor can cost more than the budget: no level starts after it
        time_limit=max(0.0, seconds - (time.perf_counter() - t0)),
        seed=seed,
        progress=progress,
    )
    h = refined.history
    state_names = backbone_state_labels(system, samples.positions[:1])[1]
    free = {}
    for i, name in enumerate(state_names):
        df, err = strata_free_energy(h["strata"], i)
        free[name] = {"df_kT": df, "err_kT": err}
    summary = {
        "n_samples": len(refined),
        "n_levels": h["n_levels"],
        "n_levels_predicted": rp["levels"],
        "n_energy_evals": int(refined.n_energy_evals),
        "acceptance": mean_acceptance(h["acceptance"]),
        "ess_before": float(samples.ess),
        # variance-equivalent ESS of the stratified estimate (see refine's history["ess"]);
        # the final weights alone read ~1 within each island after the last resampling
        "ess": float(h["ess"][-1]),
        "ess_final_weights": float(refined.ess),
        "n_unique_ancestors": h["n_unique_ancestors"],
        "strata": h["strata"],
        "log_z": float(refined.log_z),
        "log_z_err": float(refined.log_z_err),
        "proposal_mass_dropped": dropped,
        "free_energies": free,
        "seconds": time.perf_counter() - t0,
        "seconds_planned": float(seconds),
        "seconds_predicted": rp["predicted_seconds"],
        "stopped_at_time_limit": bool(h.get("stopped_at_time_limit", False)),
    }
    return refined, json_clean(summary)


def strata_free_energy(strata: Sequence[dict[str, Any]], position: int) -> tuple[float, float]:
    """dF = F(+) - F(-) in kT (and its standard error) of the ``position``-th character of
    the stratum labels, from the strata's log Z_k and relative errors (as in
    ``refine(...).history["strata"]``): Z_+ = sum of Z_k over labels with ``+`` there."""
    groups: dict[str, list[tuple[float, float]]] = {"+": [], "-": []}
    for row in strata:
        groups[str(row["label"])[position]].append((row["log_z"], row["log_z_err"] or 0.0))
    if not groups["+"] or not groups["-"]:
        side = "+" if not groups["+"] else "-"
        return (math.inf if side == "+" else -math.inf), math.inf
    log_z, rel = {}, {}
    for side, rows in groups.items():
        lz = np.array([r[0] for r in rows])
        log_z[side] = float(logsumexp(lz))
        share = np.exp(lz - log_z[side])
        rel[side] = float(np.sqrt(np.sum((share * np.array([r[1] for r in rows])) ** 2)))
    return log_z["-"] - log_z["+"], math.hypot(rel["+"], rel["-"])


def strata_state_free_energies(strata: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Population and free energy ``-log P`` (kT) of every stratum label from the strata's log
    Z_k and relative errors r_k (as in ``refine(...).history["strata"]``), in the shape of
    :func:`boltzgen.analysis.state_free_energies`. P_k = Z_k / sum_j Z_j; by the delta method
    var(log P_k) = (1 - P_k)^2 r_k^2 + sum_{j != k} P_j^2 r_j^2."""
    rows = [r for r in strata if np.isfinite(r["log_z"])]
    if not rows:
        return {}
    lz = np.array([r["log_z"] for r in rows], dtype=np.float64)
    rel = np.array([r["log_z_err"] or 0.0 for r in rows], dtype=np.float64)
    p = np.exp(lz - logsumexp(lz))
    total = np.sum((p * rel) ** 2)
    var = total - (p * rel) ** 2 + ((1.0 - p) * rel) ** 2
    return {
        str(r["label"]): {
            "population": float(pk),
            "free_energy_kT": float(-np.log(pk)) + 0.0,  # no -0.0
            "err_kT": float(np.sqrt(vk)),
        }
        for r, pk, vk in sorted(zip(rows, p, var, strict=True), key=lambda t: str(t[0]["label"]))
    }
