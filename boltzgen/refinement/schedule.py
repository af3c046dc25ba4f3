"""The tempering schedule 0 = b_0 < b_1 < ... < b_K = 1: adaptive (each next b chosen so the
conditional ESS of the incremental weights meets a target) or fixed (linear, geometric or given
betas), and the number of levels the adaptive rule predicts for a set of draws."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp

from boltzgen.errors import InputError

__all__ = ["cess", "fixed_schedule", "next_beta", "predicted_levels"]


def cess(log_w: np.ndarray, r: np.ndarray, db: float) -> float:
    """Conditional ESS fraction (sum W e^{db r})^2 / sum W e^{2 db r} for normalized W."""
    a = log_w + db * r
    return float(np.exp(2.0 * logsumexp(a) - logsumexp(a + db * r) - logsumexp(log_w)))


def next_beta(b: float, log_w: np.ndarray, r: np.ndarray, target: float) -> float:
    """Largest b' in (b, 1] with conditional ESS >= target (bisection)."""
    alive = np.isfinite(log_w)
    lw, rr = log_w[alive], r[alive]
    hi = 1.0 - b
    if cess(lw, rr, hi) >= target:
        return 1.0
    lo = 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if cess(lw, rr, mid) >= target:
            lo = mid
        else:
            hi = mid
    return min(1.0, b + max(lo, 1e-12))


def predicted_levels(
    log_ratios: np.ndarray, cess_target: float = 0.8, max_levels: int = 200
) -> int:
    """Levels the adaptive schedule would take if the moves did not change the particles.

    ``log_ratios`` (N,) = -u - log q of the draws (their importance log-weights; -inf for
    invalid ones). Moves usually raise the overlap, so this is an upper estimate; used to
    plan how many particles a budget of energy evaluations can refine.
    """
    r = np.asarray(log_ratios, dtype=np.float64)
    r = np.where(np.isfinite(r), r, -np.inf)
    if not np.isfinite(r).any():
        return 1
    lw = np.where(np.isfinite(r), 0.0, -np.inf)
    b, k = 0.0, 0
    while b < 1.0 and k < max_levels:
        b_new = next_beta(b, lw, r, cess_target)
        lw = lw + (b_new - b) * r
        b, k = b_new, k + 1
    return k


def fixed_schedule(schedule: Any, n_levels: int) -> np.ndarray:
    """The nonzero betas (increasing, ending at 1) of a fixed schedule."""
    if isinstance(schedule, str):
        k = int(n_levels)
        if k < 1:
            raise InputError(f"n_levels must be >= 1, got {n_levels}")
        if schedule == "linear":
            return np.linspace(0.0, 1.0, k + 1)[1:]
        if schedule == "geometric":
            return np.geomspace(max(1e-3, 2.0 ** -(k - 1)), 1.0, k) if k > 1 else np.ones(1)
        raise InputError(
            f"schedule must be 'adaptive', 'linear', 'geometric' or a sequence of betas, "
            f"got {schedule!r}"
        )
    betas = np.asarray(schedule, dtype=np.float64).reshape(-1)
    betas = betas[betas > 0.0]
    if (
        len(betas) == 0
        or not np.all(np.diff(betas) > 0)
        or not math.isclose(betas[-1], 1.0)
        or not np.isfinite(betas).all()
    ):
        raise InputError(
            f"a schedule must be increasing betas in (0, 1] ending at 1, got {schedule}"
        )
    betas[-1] = 1.0
    return betas
