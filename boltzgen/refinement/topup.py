"""More particles for one stratum of a finished stratified refinement, merged into it: how
time left over after the refinement goes to the weakest stratum instead of back to the user.

:func:`weakest_stratum` names the stratum (among those holding a given share of Z) with the
fewest effective particles; :func:`refine_stratum` refines as many further flow draws of that
stratum as a time budget pays for (the flow's unused draws there first, then fresh ones) and
merges them with :func:`merge_stratum`: the stratum's Z_k estimate becomes the
particle-weighted mean of the two runs' (both unbiased), its error their combination, and the
population's weights, log Z and strata rows are rewritten to match."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp

from boltzgen.cv import backbone_state_labels
from boltzgen.errors import InputError
from boltzgen.refinement.results import RefinedSamples
from boltzgen.refinement.smc import refine
from boltzgen.refinement.stratified import _combined
from boltzgen.samples import Samples

__all__ = ["merge_stratum", "refine_stratum", "stratum_effective_particles", "weakest_stratum"]

_MIN_NEW = 16  # fewer new particles than this cannot move a stratum's estimate


def stratum_effective_particles(row: dict[str, Any]) -> float:
    """A stratum row's variance-equivalent particle count (its SMC ESS fraction x particles)."""
    ess = row.get("ess")
    return float(ess) * int(row["n"]) if ess is not None and math.isfinite(ess) else 0.0


def weakest_stratum(refined: RefinedSamples, min_share: float = 0.01) -> dict[str, Any] | None:
    """The stratum row (``history["strata"]``) with the fewest effective particles among the
    strata that hold at least ``min_share`` of the population's Z or of the flow's draws (the
    ones a verdict judges: a stratum whose Z_k came out too small from too few effective
    particles is the one to strengthen, not to drop), with its ``share`` of Z added; None
    without strata."""
    rows = (refined.history or {}).get("strata") or []
    lz = np.array([r["log_z"] for r in rows], dtype=np.float64)
    if not len(rows) or not np.isfinite(lz).any():
        return None
    share = np.exp(lz - logsumexp(lz[np.isfinite(lz)]))
    judged = [
        (r, s)
        for r, s in zip(rows, share, strict=True)
        if max(s, float(r.get("mass") or 0.0)) >= min_share
    ]
    if not judged:
        return None
    row, s = min(judged, key=lambda rs: stratum_effective_particles(rs[0]))
    return {**row, "share": float(s)}


def _draws_in_stratum(gen, samples: Samples, label: str, n_used: int, want: int, seconds: float):
    """Up to ``want`` draws of the flow in stratum ``label`` that the refinement did not use:
    the draws after the first ``n_used`` of the stratum in ``samples`` (the allocation takes the
    first ones), then fresh draws for at most ``seconds``. Returns (positions, fresh draws)."""
    system = gen.system
    labels = backbone_state_labels(system, samples.positions)[0].astype(str)
    spare = samples.positions[np.flatnonzero(labels == label)[n_used:]][:want]
    parts, got, fresh = [spare], len(spare), 0
    t0 = time.perf_counter()
    batch = int(np.clip(2_000_000 // (3 * system.n_atoms), 256, 4096))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid draws are refined away or get weight 0
        while got < want and time.perf_counter() - t0 < seconds:
            with torch.no_grad():
                x = gen.sample_positions(batch)[0].cpu().numpy()
            fresh += len(x)
            hit = x[backbone_state_labels(system, x)[0].astype(str) == label][: want - got]
            parts.append(hit.astype(np.float32))
            got += len(hit)
    return np.concatenate(parts), fresh


def refine_stratum(
    gen,
    samples: Samples,
    refined: RefinedSamples,
    label: str,
    seconds: float,
    *,
    eval_seconds: float,
    n_steps: int = 3,
    n_leapfrog: int = 5,
    seed: int = 0,
) -> tuple[RefinedSamples, dict[str, Any]]:
    """``refined`` with stratum ``label`` given as many further particles as ``seconds`` pay
    for (each costs the evaluations a particle of the stratum's run cost, ``eval_seconds``
    each: best the refinement's measured seconds per evaluation, overheads included; at most a third of the time goes to fresh flow draws when the unused
    ones run out), merged (:func:`merge_stratum`). Returns (the merged population, a record:
    particles added, fresh draws, evaluations, seconds, the stratum's effective particles,
    log Z_k error and the population's ESS before and after); ``refined`` itself when the
    time pays for fewer than a handful of particles."""
    t0 = time.perf_counter()
    rows = {str(r["label"]): r for r in refined.history.get("strata") or []}
    if label not in rows:
        raise InputError(f"the refinement has no stratum {label!r}; it has {sorted(rows)}")
    row = rows[label]
    levels = max(int(row.get("n_levels") or 1), 1)
    # evaluations per particle as the stratum's own run spent them (fewer than levels x
    # sweeps x leapfrog when particles died), else that upper bound
    evals = row.get("n_energy_evals") or levels * max(n_steps, 1) * n_leapfrog * int(row["n"])
    per_particle = evals / max(int(row["n"]), 1) * eval_seconds
    want = int(0.8 * seconds / per_particle)  # 0.8: the levels may exceed the last run's
    record: dict[str, Any] = {
        "stratum": label,
        "seconds_given": float(seconds),
        "n_effective_before": stratum_effective_particles(row),
        "log_z_err_before": row.get("log_z_err"),
        "ess_before": _history_ess(refined),
    }
    if want < _MIN_NEW:
        return refined, {**record, "n_added": 0, "seconds": time.perf_counter() - t0}
    x, fresh = _draws_in_stratum(gen, samples, label, int(row["n"]), want, seconds / 3)
    left = seconds - (time.perf_counter() - t0)
    n_new = min(len(x), int(0.8 * left / per_particle))
    if n_new < _MIN_NEW:
        return refined, {
            **record,
            "n_added": 0,
            "n_fresh_draws": fresh,
            "seconds": time.perf_counter() - t0,
        }

    def strata(positions: np.ndarray) -> np.ndarray:
        return backbone_state_labels(gen.system, positions)[0].astype(str)

    extra = Samples(
        positions=x[:n_new],
        log_q=np.zeros(n_new),
        reduced_energy=np.zeros(n_new),
        log_weights=np.zeros(n_new),
        topology=samples.topology,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # max_levels reached: in the history
        more = refine(
            extra,
            gen.energy,
            log_q=gen.log_prob,
            n_steps=n_steps,
            n_leapfrog=n_leapfrog,
            max_levels=max(2 * levels, 10),
            time_limit=max(0.0, seconds - (time.perf_counter() - t0)),
            seed=seed,
            strata=strata,
            strata_mass={label: float(row["mass"])},
            strata_mass_draws=len(samples),
        )
    merged = merge_stratum(refined, more, label, n_draws=len(samples))
    new_row = next(r for r in merged.history["strata"] if str(r["label"]) == label)
    return merged, {
        **record,
        "n_added": int(n_new),
        "n_fresh_draws": int(fresh),
        "n_energy_evals": int(more.n_energy_evals),
        "n_effective_after": stratum_effective_particles(new_row),
        "log_z_err_after": new_row.get("log_z_err"),
        "ess_after": _history_ess(merged),
        "seconds": time.perf_counter() - t0,
    }


def _history_ess(refined: RefinedSamples) -> float | None:
    ess = (refined.history or {}).get("ess") or []
    return float(ess[-1]) if ess else None


def merge_stratum(
    refined: RefinedSamples, more: RefinedSamples, label: str, n_draws: int
) -> RefinedSamples:
    """``refined`` with ``more`` (a stratified refinement of further particles of the one
    stratum ``label``, same proposal mass) merged in.

    The stratum's Z_k estimate becomes (N1 Z1 + N2 Z2) / (N1 + N2) (both unbiased, so is
    their particle-weighted mean) with the relative error of that sum; every particle's
    log-weight is re-offset for the new population size so that ``mean exp(log w)`` still
    estimates Z = sum_k Z_k; log Z, its error and the variance-equivalent ESS are recomputed
    from the strata (``n_draws``: the flow draws the proposal masses came from)."""
    rows = [dict(r) for r in refined.history["strata"]]
    pos = [i for i, r in enumerate(rows) if str(r["label"]) == label]
    (add,) = more.history["strata"]
    if not pos or str(add["label"]) != label:
        raise InputError(f"cannot merge stratum {label!r}: it is not in both refinements")
    k = pos[0]
    old = rows[k]
    n, n1, n2 = len(refined), int(old["n"]), len(more)
    stratum = np.asarray(refined.extra["stratum"])
    in_k = stratum == k
    lw = np.asarray(refined.log_weights, dtype=np.float64) + math.log((n + n2) / n)
    lw[in_k] += math.log(n1 / (n1 + n2))
    # more's weights carry log q(k) (one stratum: log(mass N2 / N2)); re-offset to N1 + N2
    lw_more = np.asarray(more.log_weights, dtype=np.float64) + math.log((n + n2) / (n1 + n2))
    scale = max(old["log_z"], add["log_z"])  # sums in a shifted frame: no overflow
    a = n1 * math.exp(old["log_z"] - scale)
    b = n2 * math.exp(add["log_z"] - scale)
    rel = math.hypot(a * (old["log_z_err"] or 0.0), b * (add["log_z_err"] or 0.0)) / (a + b)
    rows[k] = {
        **old,
        "n": n1 + n2,
        "log_z": scale + math.log((a + b) / (n1 + n2)),
        "log_z_err": rel,
        "n_levels": max(old["n_levels"], add["n_levels"]),
        "ess": (stratum_effective_particles(old) + stratum_effective_particles(add)) / (n1 + n2),
        "n_unique_ancestors": old["n_unique_ancestors"] + add["n_unique_ancestors"],
        "n_energy_evals": old["n_energy_evals"] + add["n_energy_evals"],
        "n_added": n2 + int(old.get("n_added", 0)),
        "stopped_at_time_limit": bool(old.get("stopped_at_time_limit"))
        or bool(add.get("stopped_at_time_limit")),
        "cuts": list(old.get("cuts") or []) + list(add.get("cuts") or []),
    }
    mass = np.array([r["mass"] for r in rows])
    var = [
        r["log_z_err"] ** 2 + (1 - m) / (m * n_draws) if n_draws else r["log_z_err"] ** 2
        for r, m in zip(rows, mass, strict=True)
    ]
    log_z, log_z_err, ess = _combined([r["log_z"] for r in rows], var, rows, n + n2)
    hist = {
        **refined.history,
        "strata": rows,
        "ess": [min(1.0, ess)],
        "n_levels": max(refined.history.get("n_levels", 0), add["n_levels"]),
        "n_unique_ancestors": refined.history.get("n_unique_ancestors", 0)
        + add["n_unique_ancestors"],
        "n_islands": refined.history.get("n_islands", 0) + more.history.get("n_islands", 0),
    }
    ex, ex2 = refined.extra, more.extra
    extra = {
        "ancestor": np.concatenate([ex["ancestor"], np.asarray(ex2["ancestor"]) + n]),
        "island": np.concatenate(
            [ex["island"], np.asarray(ex2["island"]) + int(np.max(ex["island"])) + 1]
        ),
        "stratum": np.concatenate([stratum, np.full(n2, k, dtype=np.int64)]),
    }
    return RefinedSamples(
        positions=np.concatenate([refined.positions, more.positions]).astype(np.float32),
        log_q=np.concatenate([refined.log_q, more.log_q]),
        reduced_energy=np.concatenate([refined.reduced_energy, more.reduced_energy]),
        log_weights=np.concatenate([lw, lw_more]),
        topology=refined.topology,
        extra=extra,
        log_z=log_z,
        log_z_err=log_z_err,
        n_energy_evals=int(refined.n_energy_evals) + int(more.n_energy_evals),
        history=hist,
    )
