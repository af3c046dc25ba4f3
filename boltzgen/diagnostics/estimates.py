"""Two or more estimates of one number (kT): agreement in combined sigma, consistency of K
independent runs (chi^2), and one combined value with an error that includes their spread."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from boltzgen.diagnostics._base import _ToDict
from boltzgen.errors import InputError, ShapeError


@dataclass(frozen=True)
class Agreement(_ToDict):
    """The data's estimate against the samples' (kT): z = |difference| / combined sigma."""

    data: float
    data_error: float
    samples: float
    samples_error: float
    z: float


@dataclass(frozen=True)
class Consistency(_ToDict):
    """K independent estimates (kT) against their stated errors: chi^2 about the
    inverse-variance weighted mean with K - 1 degrees of freedom, and its p-value."""

    values: tuple[float, ...]
    errors: tuple[float, ...]
    chi2: float
    dof: int
    p_value: float


@dataclass(frozen=True)
class CombinedEstimate(_ToDict):
    """One value from K independent estimates (see :func:`combine_estimates`)."""

    value: float
    error: float
    stated_error: float
    spread_error: float
    n: int


def _z(a: float, ea: float, b: float, eb: float) -> float:
    if math.isinf(a) or math.isinf(b):
        return 0.0 if a == b else float("inf")
    if math.isnan(a) or math.isnan(b):
        return float("nan")
    sigma = math.hypot(ea, eb)
    if math.isnan(sigma):
        return float("nan")
    if sigma == 0:
        return 0.0 if a == b else float("inf")
    return abs(a - b) / sigma  # an infinite sigma gives 0: nothing can be said


def agreement(data: float, data_error: float, samples: float, samples_error: float) -> Agreement:
    """z = |data - samples| / sqrt(data_error^2 + samples_error^2) for two estimates of the
    same number (kT), e.g. dF from the training data and dF from the reweighted samples.
    An infinite estimate against a finite one gives z = inf."""
    args = [float(x) for x in (data, data_error, samples, samples_error)]
    if args[1] < 0 or args[3] < 0:
        raise InputError(f"errors must be >= 0, got {args[1]} and {args[3]}")
    return Agreement(*args, z=_z(*args))


def _values_errors(values: Any, errors: Any, k_min: int) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    if v.ndim != 1 or v.shape != e.shape:
        raise ShapeError(f"values and errors must both be (K,), got {v.shape} and {e.shape}")
    if len(v) < k_min:
        raise InputError(f"need at least {k_min} estimates, got {len(v)}")
    if np.isnan(v).any() or np.isnan(e).any() or (e < 0).any():
        raise InputError("values must not be nan and errors must be >= 0 (inf allowed)")
    return v, e


def consistency(values: Any, errors: Any) -> Consistency:
    """Do K >= 2 independent estimates (K,) agree within their stated errors (K,) (kT)?

    Cochran's chi^2 = sum ((x_i - x_w) / s_i)^2 about the inverse-variance weighted mean x_w,
    with K - 1 degrees of freedom (K = 2: chi^2 = z^2 of the difference). Estimates with an
    infinite error carry no information and are left out; an infinite value against a finite
    one gives chi^2 = inf (p = 0).
    """
    v, e = _values_errors(values, errors, 2)
    keep = np.isfinite(e)
    vk, ek = v[keep], e[keep]
    if np.isinf(vk).any():
        chi2 = 0.0 if len(set(vk.tolist())) == 1 else float("inf")
    elif len(vk) < 2:
        chi2 = float("nan")
    elif (ek == 0).any():
        chi2 = 0.0 if np.ptp(vk) == 0 else float("inf")
    else:
        wts = 1.0 / ek**2
        mean = float(np.sum(wts * vk) / wts.sum())
        chi2 = float(np.sum(((vk - mean) / ek) ** 2))
    dof = max(int(keep.sum()) - 1, 0)
    p = float(stats.chi2.sf(chi2, dof)) if dof > 0 and not math.isnan(chi2) else float("nan")
    return Consistency(tuple(v.tolist()), tuple(e.tolist()), chi2, dof, p)


def combine_estimates(values: Any, errors: Any) -> CombinedEstimate:
    """One value from K >= 2 independent estimates (K,) with stated errors (K,), in kT.

    value: the plain mean. error: max(stated, spread) with stated = sqrt(sum s_i^2) / K (the
    mean's error if every stated error were right) and spread = std(x, ddof=1) / sqrt(K) (the
    mean's error measured by the runs' scatter, which sees what a single run cannot: a flow
    that converged elsewhere, a bootstrap that misses correlations).

    Why this rule: equal weights, because the stated errors are exactly what is in doubt (an
    inverse-variance mean would follow the run that understates its error). With equal stated
    errors the rule is the Birge-ratio (PDG scale-factor) inflation stated * max(1,
    sqrt(chi^2 / (K - 1))). With K = 2 the spread term has one degree of freedom and is often
    small by chance; the max keeps the stated error as a floor. For Gaussian runs with correct
    equal errors it covers at |z| <= 2 with probability 0.967 at K = 2 (0.954 nominal):
    slightly conservative, which tests/test_diagnostics.py checks by simulation.
    """
    v, e = _values_errors(values, errors, 2)
    k = len(v)
    if not np.isfinite(v).all():
        return CombinedEstimate(float(np.mean(v)), float("inf"), float("inf"), float("inf"), k)
    stated = float(np.sqrt(np.sum(e**2)) / k)
    spread = float(np.std(v, ddof=1) / np.sqrt(k))
    return CombinedEstimate(float(np.mean(v)), max(stated, spread), stated, spread, k)
