"""Reweighting and free-energy estimators over weighted samples (pure NumPy).

Conventions:

* ``log_w`` (n,) are unnormalised log importance weights (e.g. ``-u - log q`` for flow
  samples, all zeros for equilibrium MD frames). ``-inf`` means weight 0 (e.g. a configuration
  with infinite energy); ``nan`` and ``+inf`` are rejected with :class:`InputError`.
* Free energies are in units of kT. ``F(S) = -log P(S)`` for a state S of a collective
  variable (CV); differences do not depend on the normalisation.
* Error bars are bootstrap standard deviations over samples. For correlated data (MD
  trajectories) pass ``block_size`` > 1: contiguous blocks of that many frames are resampled
  (moving-block bootstrap), which keeps the correlation inside a block.
* States are half-open intervals ``(lo, hi)`` = ``lo <= cv < hi``. For periodic CVs (angles in
  (-pi, pi]) an interval with ``lo > hi`` wraps around, e.g. ``(2.5, -2.5)`` is ``|phi| >= 2.5``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp

from boltzgen.errors import InputError, ShapeError

__all__ = [
    "as_log_weights",
    "cv_values",
    "ess_curve",
    "free_energy_difference",
    "free_energy_surface",
    "in_state",
    "kish_ess",
    "log_mean_exp",
    "log_partition",
    "n_effective",
    "normalized_weights",
    "reweighted_mean",
    "state_free_energies",
]


# ----------------------------------------------------------------------------- weights
def as_log_weights(log_w: Any, n: int | None = None) -> np.ndarray:
    """Validate log-weights: (n,) float64, no nan / +inf, at least one finite entry."""
    a = np.asarray(log_w, dtype=np.float64)
    if a.ndim != 1:
        raise ShapeError(f"log-weights must be 1-D (n,), got shape {a.shape}")
    if n is not None and len(a) != n:
        raise ShapeError(f"{len(a)} log-weights for {n} samples")
    if len(a) == 0:
        raise InputError("no samples (empty log-weights)")
    if np.isnan(a).any():
        raise InputError(
            f"{int(np.isnan(a).sum())} log-weights are NaN (energies not evaluated?); "
            "use -inf for zero weight"
        )
    if np.isposinf(a).any():
        raise InputError("log-weights contain +inf (an energy of -inf?)")
    if not np.isfinite(a).any():
        raise InputError("all log-weights are -inf: every sample has zero weight")
    return a


def normalized_weights(log_w: Any) -> np.ndarray:
    """(n,) weights summing to 1 from (n,) log-weights (computed stably; -inf -> 0)."""
    a = as_log_weights(log_w)
    w = np.exp(a - a.max())
    return w / w.sum()


def n_effective(log_w: Any) -> float:
    """Kish effective sample size n_eff = (sum w)^2 / sum w^2, between 1 and n."""
    w = normalized_weights(log_w)
    return float(1.0 / np.sum(w * w))


def kish_ess(log_w: Any) -> float:
    """Kish effective sample size as a fraction n_eff / n in (0, 1].

    Uniform weights give 1; one non-zero weight among n gives 1/n.
    """
    a = as_log_weights(log_w)
    return n_effective(a) / len(a)


def log_mean_exp(a: Any, axis: int | None = None) -> np.ndarray | float:
    """log(mean(exp(a))) along ``axis``, computed stably (-inf entries count as zeros)."""
    a = np.asarray(a, dtype=np.float64)
    n = a.size if axis is None else a.shape[axis]
    if n == 0:
        raise InputError("log_mean_exp of an empty array")
    out = logsumexp(a, axis=axis) - np.log(n)
    return float(out) if np.ndim(out) == 0 else out


def log_partition(log_w: Any) -> tuple[float, float]:
    """Importance-sampling estimate of log Z = log E_q[w] and its standard error.

    With ``log_w = -u - log q`` this is the log partition function of exp(-u) (in the
    coordinates where q is a density), up to nothing. The error is the delta-method standard
    error of the log of a sample mean: sqrt((1/ESS - 1) / n) with ESS the Kish fraction
    (exact in the same large-n approximation as the usual mean +- std/sqrt(n)).

    Returns: (log_Z, err), both dimensionless.
    """
    a = as_log_weights(log_w)
    n = len(a)
    return float(log_mean_exp(a)), float(np.sqrt(max(1.0 / kish_ess(a) - 1.0, 0.0) / n))


# ----------------------------------------------------------------------------- bootstrap
def _bootstrap_indices(
    n: int, n_bootstrap: int, rng: np.random.Generator, block_size: int = 1
) -> list[np.ndarray]:
    """``n_bootstrap`` index arrays (n,): iid resampling, or moving blocks of ``block_size``."""
    block_size = int(block_size)
    if block_size < 1:
        raise InputError(f"block_size must be >= 1, got {block_size}")
    if block_size == 1:
        return [rng.integers(0, n, n) for _ in range(n_bootstrap)]
    block_size = min(block_size, n)
    n_blocks = -(-n // block_size)
    offsets = np.arange(block_size)
    out = []
    for _ in range(n_bootstrap):
        starts = rng.integers(0, n - block_size + 1, n_blocks)
        out.append((starts[:, None] + offsets[None, :]).ravel()[:n])
    return out


def _check_bootstrap(n_bootstrap: int) -> int:
    n_bootstrap = int(n_bootstrap)
    if n_bootstrap < 0:
        raise InputError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    return n_bootstrap


def reweighted_mean(
    obs: Any,
    log_w: Any,
    n_bootstrap: int = 200,
    seed: int = 0,
    block_size: int = 1,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Self-normalised importance-sampling average sum_i w_i obs_i / sum_i w_i.

    Args:
        obs: (n,) or (n, ...) observable per sample (any units; the result has the same).
        log_w: (n,) log-weights.
        n_bootstrap: bootstrap replicates for the error (0: error is nan).
        block_size: frames per block for correlated data.

    Returns: (mean, err) with the shape of ``obs[0]`` (floats for scalar observables).
    """
    a = as_log_weights(log_w)
    o = np.asarray(obs, dtype=np.float64)
    if o.ndim == 0 or len(o) != len(a):
        raise ShapeError(f"observable shape {o.shape} does not match {len(a)} log-weights")
    w = np.exp(a - a.max())
    flat = o.reshape(len(a), -1)
    if not np.isfinite(flat[w > 0]).all():
        raise InputError("observable is not finite on samples with non-zero weight")
    flat = np.where(w[:, None] > 0, flat, 0.0)

    def estimate(idx: np.ndarray | None) -> np.ndarray:
        ww, oo = (w, flat) if idx is None else (w[idx], flat[idx])
        s = ww.sum()
        return ww @ oo / s if s > 0 else np.full(oo.shape[1], np.nan)

    mean = estimate(None)
    n_bootstrap = _check_bootstrap(n_bootstrap)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        reps = np.array(
            [estimate(i) for i in _bootstrap_indices(len(a), n_bootstrap, rng, block_size)]
        )
        err = np.nanstd(reps, axis=0, ddof=1) if n_bootstrap > 1 else np.full_like(mean, np.nan)
    else:
        err = np.full_like(mean, np.nan)
    shape = o.shape[1:]
    if shape == ():
        return float(mean[0]), float(err[0])
    return mean.reshape(shape), err.reshape(shape)


# ----------------------------------------------------------------------------- CVs / states
def _positions_of(data: Any) -> np.ndarray:
    if hasattr(data, "trajectory") and hasattr(data.trajectory, "xyz"):  # boltzgen.md.MDData
        return np.asarray(data.trajectory.xyz)
    if hasattr(data, "positions") and not hasattr(data, "xyz"):
        return np.asarray(data.positions)
    if hasattr(data, "xyz"):  # mdtraj.Trajectory
        return np.asarray(data.xyz)
    return np.asarray(data)


def _log_weights_of(data: Any, n: int, log_weights: Any = None) -> np.ndarray:
    if log_weights is not None:
        return as_log_weights(log_weights, n)
    lw = getattr(data, "log_weights", None)
    if lw is None:  # mdtraj.Trajectory or plain positions: equilibrium data, uniform weights
        return np.zeros(n)
    return as_log_weights(lw, n)


def cv_values(data: Any, cv: Callable[[np.ndarray], Any] | Any) -> np.ndarray:
    """(n,) float64 CV values: ``cv(positions)`` for a callable, else ``cv`` as an array.

    ``data`` is a :class:`boltzgen.samples.Samples`, an ``mdtraj.Trajectory`` or positions
    (n, n_atoms, 3) nm (only used when ``cv`` is callable).
    """
    if callable(cv):
        v = cv(_positions_of(data))
        if hasattr(v, "detach"):
            v = v.detach().cpu().numpy()
    else:
        v = cv
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 1:
        raise ShapeError(f"CV values must be (n,), got shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError(f"{int((~np.isfinite(v)).sum())} CV values are not finite")
    return v


def in_state(values: np.ndarray, state: Sequence[float]) -> np.ndarray:
    """(n,) bool: ``lo <= v < hi``; if ``lo > hi`` the interval wraps (``v >= lo or v < hi``),
    which is how a periodic CV (angle in (-pi, pi]) expresses a region around +-pi."""
    try:
        lo, hi = (float(s) for s in state)
    except (TypeError, ValueError):
        raise InputError(f"a state must be an interval (lo, hi), got {state!r}") from None
    if not (np.isfinite(lo) or np.isfinite(hi)) or np.isnan(lo) or np.isnan(hi):
        raise InputError(f"state bounds must be numbers, got {state!r}")
    if lo == hi:
        raise InputError(f"state {state!r} is empty (lo == hi)")
    if lo < hi:
        return (values >= lo) & (values < hi)
    return (values >= lo) | (values < hi)


def _wrap(values: np.ndarray, period: float | None) -> np.ndarray:
    if period is None:
        return values
    half = 0.5 * float(period)
    return -((-values + half) % float(period) - half)  # into (-period/2, period/2]


def free_energy_difference(
    samples_or_traj: Any,
    cv: Callable[[np.ndarray], Any] | Any,
    state_a: Sequence[float],
    state_b: Sequence[float],
    n_bootstrap: int = 200,
    seed: int = 0,
    block_size: int = 1,
    log_weights: Any = None,
    period: float | None = None,
) -> tuple[float, float]:
    """dF = F(A) - F(B) = -log(P_A / P_B) in kT, with a bootstrap standard error.

    P_S is the (re)weighted probability of state S = ``lo <= cv < hi``. With
    ``state_a=(0, pi)`` and ``state_b=(-pi, 0)`` on phi this is dF = F(phi > 0) - F(phi < 0),
    positive when phi > 0 is less likely.

    Args:
        samples_or_traj: :class:`boltzgen.samples.Samples` (its log-weights are used), an
            ``mdtraj.Trajectory`` or :class:`boltzgen.md.MDData` (uniform weights), or
            positions (n, n_atoms, 3) nm.
        cv: callable positions (n, n_atoms, 3) nm -> (n,) (e.g. ``boltzgen.cv.dihedral``), or
            the (n,) values themselves.
        state_a, state_b: half-open intervals (lo, hi) on the CV; ``lo > hi`` wraps around
            (periodic CVs). They must not share samples.
        n_bootstrap: bootstrap replicates (0: err is nan). seed: bootstrap RNG seed.
        block_size: > 1 for correlated data (moving-block bootstrap over frames).
        log_weights: (n,) overrides the samples' own log-weights.
        period: wrap CV values into (-period/2, period/2] first (default: the CV's ``period``
            attribute for callables such as dihedrals, else no wrapping).

    Returns: (df, err) in kT. df is +inf (or -inf) if state A (B) holds no weight; err is inf
    when some bootstrap replicates leave a state empty (the estimate is not converged).
    """
    values = cv_values(samples_or_traj, cv)
    if period is None:
        period = getattr(cv, "period", None)
    values = _wrap(values, period)
    lw = _log_weights_of(samples_or_traj, len(values), log_weights)
    in_a, in_b = in_state(values, state_a), in_state(values, state_b)
    if (in_a & in_b).any():
        raise InputError(f"states {tuple(state_a)} and {tuple(state_b)} overlap")
    w = np.exp(lw - lw.max())
    wa, wb = w * in_a, w * in_b

    def df_of(idx: np.ndarray | None) -> float:
        pa, pb = (wa.sum(), wb.sum()) if idx is None else (wa[idx].sum(), wb[idx].sum())
        with np.errstate(divide="ignore"):
            return float(np.log(pb) - np.log(pa)) if (pa > 0 or pb > 0) else np.nan

    df = df_of(None)
    if np.isnan(df):
        raise InputError("neither state holds any sample with non-zero weight")
    n_bootstrap = _check_bootstrap(n_bootstrap)
    if n_bootstrap < 2:
        return df, float("nan")
    rng = np.random.default_rng(seed)
    reps = np.array([df_of(i) for i in _bootstrap_indices(len(w), n_bootstrap, rng, block_size)])
    if not np.isfinite(reps).all():
        return df, float("inf")
    return df, float(np.std(reps, ddof=1))


def state_free_energies(
    labels: Any,
    log_weights: Any = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    block_size: int = 1,
) -> dict[str, dict[str, float]]:
    """Population and free energy of every discrete state (e.g. backbone sign patterns from
    :func:`boltzgen.cv.backbone_state_labels`) at once, with bootstrap errors.

    Args:
        labels: (n,) state label per sample (any hashable; reported as ``str``).
        log_weights: (n,) log importance weights (None: uniform, equilibrium MD frames).
        n_bootstrap: replicates for the errors (0: errors are nan).
        block_size: > 1 for correlated data (moving-block bootstrap).

    Returns: ``{label: {"population", "free_energy_kT", "err_kT"}}`` sorted by label, with
    ``free_energy_kT = -log P(label)`` (the populations sum to 1, so F is absolute, not
    relative to one state). err is the bootstrap std of F, inf when some replicate leaves the
    state empty (its estimate is not converged). States with no weight are absent.
    """
    lab = np.asarray(labels).astype(str)
    if lab.ndim != 1 or len(lab) == 0:
        raise ShapeError(f"labels must be (n,) with n >= 1, got shape {lab.shape}")
    lw = as_log_weights(np.zeros(len(lab)) if log_weights is None else log_weights, len(lab))
    w = np.exp(lw - lw.max())
    keys, index = np.unique(lab, return_inverse=True)

    def neg_log_p(idx: np.ndarray | None) -> np.ndarray:
        i, ww = (index, w) if idx is None else (index[idx], w[idx])
        h = np.bincount(i, weights=ww, minlength=len(keys))
        with np.errstate(divide="ignore"):
            return -np.log(h / h.sum())

    f = neg_log_p(None)
    err = np.full(len(keys), np.nan)
    n_bootstrap = _check_bootstrap(n_bootstrap)
    if n_bootstrap > 1:
        rng = np.random.default_rng(seed)
        reps = np.array(
            [neg_log_p(i) for i in _bootstrap_indices(len(lab), n_bootstrap, rng, block_size)]
        )
        finite = np.isfinite(reps).all(axis=0)
        err = np.where(finite, np.std(np.where(finite, reps, 0.0), axis=0, ddof=1), np.inf)
    return {
        str(k): {"population": float(np.exp(-fk)), "free_energy_kT": float(fk), "err_kT": float(e)}
        for k, fk, e in zip(keys, f, err, strict=True)
        if np.isfinite(fk)
    }


def _histogram(vals: list[np.ndarray], w: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    if len(vals) == 1:
        return np.histogram(vals[0], bins=edges[0], weights=w)[0]
    return np.histogram2d(vals[0], vals[1], bins=edges, weights=w)[0]


def free_energy_surface(
    samples_or_traj: Any,
    cvs: Any,
    bins: int | Sequence[int] = 50,
    range: Any = None,  # noqa: A002 - numpy's name
    n_bootstrap: int = 100,
    seed: int = 0,
    block_size: int = 1,
    log_weights: Any = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Free-energy surface F = -log p (kT, minimum 0) along one or two CVs by weighted histogram.

    Args:
        samples_or_traj: Samples, mdtraj.Trajectory or positions (see
            :func:`free_energy_difference`).
        cvs: one CV (callable or (n,) values) for a profile, or a pair ``(cv_x, cv_y)`` (or an
            (n, 2) array) for a 2-D surface.
        bins: bins per CV (int, or one per CV).
        range: (lo, hi) for one CV or ((lo, hi), (lo, hi)) for two; default: data min/max.
            Samples outside are ignored (they do not count in the normalisation either).
        n_bootstrap: replicates for F_err (0: F_err is all nan).
        block_size: > 1 for correlated data.

    Returns:
        centers: (bins,) for one CV, or a tuple (centers_x, centers_y) for two.
        F: (bins,) or (bins_x, bins_y) in kT, min 0; bins with no weight are nan.
        F_err: same shape, bootstrap std of F (nan where F is nan or a bin is empty in
            replicates too often to say: computed over replicates where the bin is non-empty).
    """
    if isinstance(cvs, np.ndarray) and cvs.ndim == 2 and cvs.shape[1] == 2:
        cv_list: list[Any] = [cvs[:, 0], cvs[:, 1]]
    elif isinstance(cvs, list | tuple) and len(cvs) in (1, 2) and not np.isscalar(cvs[0]):
        cv_list = list(cvs)
    else:
        cv_list = [cvs]
    vals = [cv_values(samples_or_traj, c) for c in cv_list]
    dim = len(vals)
    n = len(vals[0])
    if any(len(v) != n for v in vals):
        raise ShapeError("the CVs have different numbers of values")
    nb = [int(bins)] * dim if np.isscalar(bins) else [int(b) for b in bins]
    if len(nb) != dim or min(nb) < 1:
        raise InputError(f"bins must be a positive int or one per CV, got {bins!r}")
    if range is None:
        rngs = [(float(v.min()), float(v.max())) for v in vals]
    else:
        r = np.asarray(range, dtype=np.float64)
        rngs = [tuple(r)] if dim == 1 and r.shape == (2,) else [tuple(x) for x in r.reshape(-1, 2)]
        if len(rngs) != dim:
            raise InputError(f"range must give (lo, hi) per CV, got {range!r}")
    for lo, hi in rngs:
        if not hi > lo:
            raise InputError(f"range ({lo}, {hi}) is empty")
    edges = [np.linspace(lo, hi, b + 1) for (lo, hi), b in zip(rngs, nb, strict=True)]
    centers_list = [0.5 * (e[1:] + e[:-1]) for e in edges]
    lw = _log_weights_of(samples_or_traj, n, log_weights)
    w = np.exp(lw - lw.max())

    def neg_log_p(idx: np.ndarray | None) -> np.ndarray:
        if idx is None:
            h = _histogram(vals, w, edges)
        else:
            h = _histogram([v[idx] for v in vals], w[idx], edges)
        total = h.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            f = -np.log(h / total) if total > 0 else np.full(h.shape, np.nan)
        f[~np.isfinite(f)] = np.nan
        return f

    f = neg_log_p(None)
    if np.isnan(f).all():
        raise InputError("no sample with non-zero weight falls inside the histogram range")
    f_min = np.nanmin(f)
    n_bootstrap = _check_bootstrap(n_bootstrap)
    err = np.full(f.shape, np.nan)
    if n_bootstrap > 1:
        rng = np.random.default_rng(seed)
        reps = np.array([neg_log_p(i) for i in _bootstrap_indices(n, n_bootstrap, rng, block_size)])
        counts = np.sum(np.isfinite(reps), axis=0)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # bins empty in every replicate
            sd = np.nanstd(np.where(np.isfinite(reps), reps, np.nan), axis=0, ddof=1)
        err = np.where((counts > 1) & np.isfinite(f), sd, np.nan)
    centers = centers_list[0] if dim == 1 else tuple(centers_list)
    return centers, f - f_min, err


def ess_curve(log_weights: Any, n_points: int = 25, n_min: int = 100) -> dict[str, list]:
    """Kish ESS of the first n samples for n on a geometric grid up to all of them (samples
    are independent draws, so prefixes are fair subsets): ``n``, ``ess`` (fraction),
    ``n_eff``. A falling fraction means rare large weights: the proposal misses mass."""
    lw = np.asarray(log_weights, dtype=np.float64)
    total = len(lw)
    grid = np.unique(np.geomspace(min(n_min, total), total, n_points).astype(int))
    out: dict[str, list] = {"n": [], "ess": [], "n_eff": []}
    for m in grid:
        part = lw[:m]
        ne = n_effective(part) if np.isfinite(part).any() else 0.0
        out["n"].append(int(m))
        out["n_eff"].append(float(ne))
        out["ess"].append(float(ne / m))
    return out
