"""Importance weights per stratum and state: Kish ESS, Pareto k-hat (PSIS), particles, mass.

``log_w`` (n,) are unnormalised log importance weights (``-inf``: weight 0, e.g. a clash);
labels (n,) are hashable state names (e.g. the backbone sign pattern ``"+-"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from boltzgen.analysis import as_log_weights, n_effective
from boltzgen.diagnostics._base import _ToDict
from boltzgen.diagnostics.thresholds import (
    CUT_MIN_ESS,
    K_HAT_MAX,
    MIN_STATE_MASS,
    MISSING_STATE_MASS_RATIO,
)
from boltzgen.errors import InputError, ShapeError

_MIN_DRAWS_FOR_K_HAT = 25  # PSIS fits the generalised Pareto to >= 5 tail draws (S / 5)
_EQUAL_WEIGHTS = 1e-9  # largest weights equal to this relative spread: a bounded tail
# the fit exponentiates the tail relative to its largest weight; past ~745 nats float64
# underflows to 0, and the ties at 0 made psislw return k ~ 0.07 for the worst weights
_TAIL_SPAN_MAX = 700.0


@dataclass(frozen=True)
class StratumDiagnostics(_ToDict):
    """One stratum (e.g. a backbone state) of a reweighted estimate.

    n_particles: draws with non-zero weight; ess_count: their Kish ESS; ess_fraction:
    ess_count / n_particles; k_hat: Pareto k-hat of their log-weights (nan below 25 draws,
    -inf for bounded weights); k_hat_threshold: its limit for n_particles draws; mass: the
    stratum's share of the (reweighted) weight, in [0, 1] (nan if unknown).
    """

    label: str
    n_particles: int
    ess_count: float
    ess_fraction: float
    k_hat: float
    k_hat_threshold: float
    mass: float = float("nan")


@dataclass(frozen=True)
class StateMass(_ToDict):
    """A state's probability under the data (frame weights) and under the flow's samples
    (their weights), and the number of samples in it."""

    label: str
    data_mass: float
    flow_mass: float
    n_samples: int

    @property
    def missing(self) -> bool:
        """The data holds >= MIN_STATE_MASS here and the flow < MISSING_STATE_MASS_RATIO of it."""
        return (
            self.data_mass >= MIN_STATE_MASS
            and self.flow_mass < MISSING_STATE_MASS_RATIO * self.data_mass
        )


def k_hat_threshold(n: int) -> float:
    """min(1 - 1/log10(S), 0.7) for S draws (Vehtari et al. 2024); -inf for S <= 1."""
    if n <= 1:
        return float("-inf")
    return float(min(1.0 - 1.0 / math.log10(n), K_HAT_MAX))


def _tail_size(n: int) -> int:
    # as arviz-stats (r_eff = 1: independent draws): 3 sqrt(S) draws, or S / 5 for S <= 225
    return int(np.floor(3 * math.sqrt(n))) if n > 225 else n // 5


def k_hat(log_w: Any) -> float:
    """Pareto k-hat of importance weights, from their (n,) log-weights (-inf: weight 0).

    The generalised Pareto shape fitted to the largest weights (PSIS, Vehtari et al. 2024)
    by ``arviz_stats``'s ``psislw``, with r_eff = 1 (independent draws). Sign convention:
    arviz-stats' ``psislw`` takes log-likelihoods (PSIS-LOO weights are 1/p), so it is given
    ``-log_w``. Zero weights are left out (they do not reach the right tail).

    Returns: k-hat (dimensionless); nan with fewer than 25 non-zero weights (too few to fit),
    -inf when the largest weights are equal to 1e-9 relative (a bounded tail, e.g. uniform
    weights: the fit is then undefined and the weights harmless); +inf when the tail's
    largest weight is more than e^700 times its smallest (float64 cannot fit that tail, and
    no tail that light could span it: a GPD tail of shape k spans about k log(sqrt(S) / 3)
    nats, under 30 for k = 5 and S = 1e6).
    """
    a = as_log_weights(log_w)
    a = a[np.isfinite(a)]
    n = len(a)
    if n < _MIN_DRAWS_FOR_K_HAT:
        return float("nan")
    tail = np.sort(a)[-_tail_size(n) :]
    if -np.expm1(tail[0] - tail[-1]) < _EQUAL_WEIGHTS:
        return float("-inf")
    if tail[-1] - tail[0] > _TAIL_SPAN_MAX:
        return float("inf")
    from arviz_stats.base import array_stats  # heavy import (scipy.signal): on first use

    with np.errstate(divide="ignore", invalid="ignore"):  # ties in the tail: still a fit
        _, khat = array_stats.psislw(-a, r_eff=1.0)
    return float(khat)


def cut_is_degenerate(cut: dict[str, Any] | None) -> bool:
    """Whether the jump of a refinement stopped at its time limit (its ``history["cut"]``,
    from :func:`boltzgen.refinement.run.cut_record`) left weights that cannot be trusted: a
    k-hat above its threshold for the particles, or a Kish ESS below CUT_MIN_ESS. ``None``
    (a refinement stopped at its limit without the record, e.g. from an older checkpoint)
    counts as degenerate."""
    if not cut:
        return True
    n = int(cut.get("n_particles", 0))
    kh = float(cut.get("k_hat", math.nan))
    ess = float(cut.get("ess_count", 0.0))
    too_heavy = math.isnan(kh) or kh > k_hat_threshold(n)
    return too_heavy or not ess >= CUT_MIN_ESS


def _labels(labels: Any, n: int, what: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ShapeError(f"{what} must be (n,) = ({n},), got shape {lab.shape}")
    return lab


def stratum_diagnostics(log_w: Any, labels: Any) -> list[StratumDiagnostics]:
    """Particles, Kish ESS, k-hat and mass per stratum.

    Args:
        log_w: (n,) log-weights of all draws (-inf: weight 0, e.g. a clash).
        labels: (n,) stratum label per draw (e.g. the backbone state's sign pattern).

    Returns: one :class:`StratumDiagnostics` per distinct label, sorted by label; each
    stratum's ESS and k-hat are of its own draws' weights (as for one SMC run per stratum).
    """
    a = as_log_weights(log_w)
    lab = _labels(labels, len(a), "labels")
    w = np.exp(a - a.max())
    total = w.sum()
    out = []
    for label in sorted(set(lab.tolist()), key=str):
        sel = a[(lab == label) & np.isfinite(a)]
        n = len(sel)
        ess = n_effective(sel) if n else 0.0
        out.append(
            StratumDiagnostics(
                label=str(label),
                n_particles=n,
                ess_count=float(ess),
                ess_fraction=float(ess / n) if n else 0.0,
                k_hat=k_hat(sel) if n else float("nan"),
                k_hat_threshold=k_hat_threshold(n),
                mass=float(w[lab == label].sum() / total),
            )
        )
    return out


# ----------------------------------------------------------------------------- states
def _masses(labels: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    total = weights.sum()
    return {str(k): float(weights[labels == k].sum() / total) for k in set(labels.tolist())}


def state_masses(
    sample_labels: Any,
    data_labels: Any,
    sample_log_weights: Any = None,
    data_weights: Any = None,
) -> list[StateMass]:
    """The flow's mass per state against the data's.

    Args:
        sample_labels: (n,) state per flow draw.
        data_labels: (m,) state per data frame.
        sample_log_weights: (n,) log-weights of the draws: the reweighted estimate's mass
            (what the reported number sees; a state with no draws has mass 0 whatever the
            weights). None: uniform, i.e. the flow's own (proposal) mass.
        data_weights: (m,) non-negative frame weights (e.g. from REMD or metadynamics
            reweighting); None: uniform (equilibrium MD).

    Returns: one :class:`StateMass` per state seen in either, sorted by label.
    """
    s_lab = np.asarray(sample_labels)
    if s_lab.ndim != 1 or len(s_lab) == 0:
        raise ShapeError(f"sample_labels must be (n,) with n >= 1, got shape {s_lab.shape}")
    d_lab = np.asarray(data_labels)
    if d_lab.ndim != 1 or len(d_lab) == 0:
        raise ShapeError(f"data_labels must be (m,) with m >= 1, got shape {d_lab.shape}")
    if sample_log_weights is None:
        sw = np.ones(len(s_lab))
    else:
        a = as_log_weights(sample_log_weights, len(s_lab))
        sw = np.exp(a - a.max())
    if data_weights is None:
        dw = np.ones(len(d_lab))
    else:
        dw = np.asarray(data_weights, dtype=np.float64)
        _labels(dw, len(d_lab), "data_weights")
        if not np.isfinite(dw).all() or (dw < 0).any() or dw.sum() <= 0:
            raise InputError("data_weights must be finite, >= 0 and not all 0")
    flow, data = _masses(s_lab, sw), _masses(d_lab, dw)
    counts = {str(k): int(np.sum(s_lab == k)) for k in set(s_lab.tolist())}
    return [
        StateMass(
            label=k,
            data_mass=data.get(k, 0.0),
            flow_mass=flow.get(k, 0.0),
            n_samples=counts.get(k, 0),
        )
        for k in sorted(set(flow) | set(data))
    ]
