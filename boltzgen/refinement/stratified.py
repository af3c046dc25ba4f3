"""Stratified refinement: one SMC run per stratum (the particles with one label, e.g. one
backbone state), each restricted to its stratum, merged into one weighted population whose
log Z adds the strata's Z_k (see ``strata`` in :func:`~boltzgen.refinement.refine`)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from boltzgen.errors import InputError
from boltzgen.jsonable import json_clean
from boltzgen.refinement.kernels import stratum_labels
from boltzgen.refinement.results import RefinedSamples, SMCResult, make_result, mean_acceptance
from boltzgen.refinement.run import Settings, SMCRun
from boltzgen.samples import Samples

__all__ = ["refine_stratified"]


def _strata_mass(
    keys: np.ndarray, counts: np.ndarray, strata_mass: dict[Any, float] | None
) -> np.ndarray:
    """q(k) per stratum: the given masses, or the particles' own shares."""
    if strata_mass is None:
        return counts / counts.sum()
    missing = [k for k in keys if k not in strata_mass]
    if missing:
        raise InputError(f"strata_mass has no entry for the strata {missing}")
    mass = np.array([float(strata_mass[k]) for k in keys])
    if not (np.all(mass > 0) and np.all(np.isfinite(mass)) and mass.sum() <= 1 + 1e-9):
        raise InputError("strata_mass must be positive and sum to at most 1")
    return mass


def _stratum_row(key: Any, n: int, mass: float, log_z: float, rel: float, res) -> dict:
    h = res.history
    return {
        "label": json_clean(key),
        "n": int(n),
        "mass": float(mass),
        "log_z": float(log_z),
        "log_z_err": float(rel),
        "n_levels": h["n_levels"],
        "ess": float(h["ess"][-1]) if h["ess"] else float("nan"),
        "ess_is": h["ess_is"],
        "acceptance": mean_acceptance(h["acceptance"]),
        "n_unique_ancestors": h["n_unique_ancestors"],
        "n_energy_evals": int(res.n_energy_evals),
        "stopped_at_time_limit": bool(h["stopped_at_time_limit"]),
        "cuts": [h["cut"]] if h.get("cut") else [],
    }


def _combined(
    z_k: list[float], var_k: list[float], rows: list[dict], n: int
) -> tuple[float, float, float]:
    """(log Z = log sum_k Z_k, its relative error, the variance-equivalent ESS fraction) from
    the strata's log Z_k, relative variances and rows."""
    z_k_arr = np.array(z_k)
    log_z = float(logsumexp(z_k_arr))
    share_k = np.exp(z_k_arr - log_z)
    log_z_err = float(math.sqrt(np.sum(share_k**2 * np.array(var_k))))
    # the stratified estimator's variance-equivalent sample size: 1 / sum_k s_k^2 / n_eff_k
    n_eff_k = np.array([max(r["ess"], 1e-12) * r["n"] for r in rows])
    return log_z, log_z_err, float(1.0 / np.sum(share_k**2 / n_eff_k) / n)


def refine_stratified(
    x: torch.Tensor,
    template: Samples | None,
    energy: Callable,
    log_q: Callable,
    strata: Callable,
    strata_mass: dict[Any, float] | None,
    mass_draws: int | None,
    seed: int,
    settings: Settings,
    progress: Callable[[float, str], None] | None = None,
) -> RefinedSamples | SMCResult:
    """One SMC run per stratum (see ``strata`` in :func:`~boltzgen.refinement.refine`),
    merged: each stratum's log-weights shifted by log(q(k) N / N_k), log Z = log sum_k Z_k
    with the islands' and the proposal masses' errors."""
    if not callable(strata):
        raise InputError("strata must be a callable positions -> labels")
    n = len(x)
    labels = stratum_labels(strata, x)
    keys, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    mass = _strata_mass(keys, counts, strata_mass)
    draws = n if strata_mass is None else mass_draws
    positions = np.empty(tuple(x.shape), dtype=np.float64)
    lq, u, lw = (np.empty(n) for _ in range(3))
    ancestor = np.empty(n, dtype=np.int64)
    island = np.empty(n, dtype=np.int64)
    rows, z_k, var_k = [], [], []
    n_evals, n_isl, levels = 0, 0, 0
    for k, key in enumerate(keys):
        members = np.flatnonzero(inverse == k)
        sub = settings
        if sub.deadline is not None:  # what is left, shared by the particles still to run
            left = max(0.0, sub.deadline - time.monotonic())
            share_left = float(counts[k]) / float(np.sum(counts[k:]))
            sub = dataclasses.replace(sub, deadline=time.monotonic() + left * share_left)
        if sub.n_islands is not None:
            sub = dataclasses.replace(sub, n_islands=min(int(sub.n_islands), len(members)))
        done, share = float(np.sum(counts[:k])) / n, float(counts[k]) / n

        def sub_progress(f: float, msg: str, done=done, share=share, key=key) -> None:
            if progress is not None:
                progress(done + share * f, f"stratum {key}: {msg}")

        run = SMCRun(
            x[members].clone(),
            None,
            energy,
            log_q,
            sub,
            seed + 7919 * k,
            region=(strata, key),
            progress=sub_progress,
            stacklevel=3,  # refine_stratified's caller is refine
        )
        res = run.run()
        positions[members] = res.positions
        lq[members], u[members] = res.log_q, res.reduced_energy
        lw[members] = res.log_weights + math.log(mass[k] * n / len(members))
        ancestor[members] = members[run.eve]
        island[members] = run.island + n_isl
        n_isl += run.n_islands
        n_evals += res.n_energy_evals
        levels = max(levels, res.history["n_levels"])
        zk = math.log(mass[k]) + res.log_z  # log Z_k
        rel = res.log_z_err if math.isfinite(res.log_z_err) else 0.0
        rel_mass = math.sqrt((1 - mass[k]) / (mass[k] * draws)) if draws else 0.0
        z_k.append(zk)
        var_k.append(rel**2 + rel_mass**2)
        rows.append(_stratum_row(key, len(members), mass[k], zk, rel, res))
    log_z, log_z_err, ess = _combined(z_k, var_k, rows, n)
    hist: dict[str, Any] = {
        "strata": rows,
        "ess": [min(1.0, ess)],
        "acceptance": [r["acceptance"] for r in rows if r["acceptance"] is not None],
        "n_levels": levels,
        "n_unique_ancestors": int(sum(r["n_unique_ancestors"] for r in rows)),
        "n_islands": n_isl,
        "seed": int(seed),
        "stopped_at_time_limit": any(r["stopped_at_time_limit"] for r in rows),
    }
    extra = {"ancestor": ancestor, "island": island, "stratum": inverse.astype(np.int64)}
    return make_result(template, positions, lq, u, lw, log_z, log_z_err, n_evals, hist, extra)
