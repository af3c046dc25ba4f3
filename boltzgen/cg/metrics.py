r"""Scores of a CG model against a reference on two CG dihedrals (phi, psi for ADP).

Following the metric code of the flow-matching CG paper (Koehler et al., JCTC 2023; the
evaluator shared in microsoft/two-for-one-diffusion):

* histogram: 60 x 60 bins (61 edges) on [-pi, pi]^2, normalised to probabilities p;
* KL = sum p_ref log(p_ref / p_model) over bins populated in both (bins empty in either are
  skipped, so KL alone does not see reference mass the model never reaches: that is reported
  separately as ``unreached_mass``, the reference probability in bins the model never visits);
* PMF MSE = mean over bins finite in both of (kT ln p_ref - kT ln p_model)^2 in (kcal/mol)^2,
  kT at the given temperature, both histograms normalised to 1 (no further alignment);
* populated PMF MSE: the same over the bins whose reference free energy lies below
  ``populated_kcal`` (4 kcal/mol) above its minimum (the basins, where a reference of finite
  size is accurate), with its noise floor: the score of an exact i.i.d. sample of the
  model's size drawn from the reference histogram (seeded);
* dF = F(phi > 0) - F(phi < 0) = -ln(P(phi > 0) / P(phi < 0)) in kT (first column).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from boltzgen.analysis import free_energy_difference
from boltzgen.constants import GAS_CONSTANT, KJ_PER_KCAL
from boltzgen.errors import InputError, ShapeError

__all__ = [
    "BINS",
    "KCAL",
    "delta_f",
    "dihedral_histogram",
    "evaluate",
    "kl_divergence",
    "pmf_mse",
    "unreached_mass",
]

BINS = 60
KCAL = KJ_PER_KCAL  # kJ per kcal


def _angles(a: Any) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ShapeError(f"dihedral values must be (N, 2) radians, got {x.shape}")
    if len(x) == 0:
        raise InputError("no dihedral values")
    return x


def dihedral_histogram(angles: Any, bins: int = BINS, weights: Any = None) -> np.ndarray:
    """(bins, bins) probabilities (sum 1) of (N, 2) angles on [-pi, pi]^2 (first index: column
    0). Non-finite rows are ignored."""
    x = _angles(angles)
    ok = np.isfinite(x).all(1)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[ok]
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    h, _, _ = np.histogram2d(x[ok, 0], x[ok, 1], bins=[edges, edges], weights=w)
    if h.sum() <= 0:
        raise InputError("no dihedral values inside [-pi, pi]^2")
    return h / h.sum()


def kl_divergence(p_ref: np.ndarray, p_model: np.ndarray) -> float:
    """sum p_ref log(p_ref / p_model) over bins where both are > 0 (nats)."""
    p, q = np.asarray(p_ref, float), np.asarray(p_model, float)
    both = (p > 0) & (q > 0)
    return float(np.sum(p[both] * np.log(p[both] / q[both])))


def pmf_mse(
    p_ref: np.ndarray,
    p_model: np.ndarray,
    temperature: float = 300.0,
    max_kcal: float | None = None,
) -> float:
    """Mean over bins populated in both of (kT ln p_ref - kT ln p_model)^2, (kcal/mol)^2;
    with ``max_kcal`` only over bins whose reference free energy is below that (kcal/mol above
    the reference minimum)."""
    p, q = np.asarray(p_ref, float), np.asarray(p_model, float)
    both = (p > 0) & (q > 0)
    kt = GAS_CONSTANT * float(temperature) / KCAL
    if max_kcal is not None:
        both &= p >= p.max() * math.exp(-float(max_kcal) / kt)
    if not both.any():
        return math.nan
    return float(np.mean((kt * (np.log(p[both]) - np.log(q[both]))) ** 2))


def unreached_mass(p_ref: np.ndarray, p_model: np.ndarray) -> float:
    """Reference probability in bins the model never visits."""
    p, q = np.asarray(p_ref, float), np.asarray(p_model, float)
    return float(p[q <= 0].sum())


def delta_f(phi: Any, weights: Any = None) -> float:
    """F(phi > 0) - F(phi < 0) in kT (inf if phi > 0 is never visited): the library's
    :func:`boltzgen.analysis.free_energy_difference` without a bootstrap."""
    v = np.asarray(phi, dtype=np.float64).reshape(-1)
    ok = np.isfinite(v)
    lw = None
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        with np.errstate(divide="ignore"):
            lw = np.log(w[ok])
    df, _ = free_energy_difference(
        v[ok], v[ok], (0.0, math.inf), (-math.inf, 0.0), n_bootstrap=0, log_weights=lw
    )
    return df


def evaluate(
    reference: Any,
    model: Any,
    temperature: float = 300.0,
    *,
    bins: int = BINS,
    reference_weights: Any = None,
    model_weights: Any = None,
    populated_kcal: float = 4.0,
    seed: int = 0,
    df_column: int = 0,
) -> dict[str, float]:
    """Scores of ``model`` against ``reference`` dihedral values, both (N, 2) radians
    (columns phi, psi), each optionally weighted. Returns a JSON-able dict: ``kl``,
    ``pmf_mse_kcal2``, ``pmf_mse_populated_kcal2`` (bins below ``populated_kcal``),
    ``pmf_mse_populated_floor_kcal2`` (an exact sample of the model's size scores this),
    ``populated_mass``, ``unreached_mass``, ``df_model_kT``, ``df_reference_kT``,
    ``n_reference``, ``n_model``, ``bins``. The dF values are of the sign of column
    ``df_column`` (0: phi; 1: psi, the state dihedral of proline)."""
    ref, mod = _angles(reference), _angles(model)
    p = dihedral_histogram(ref, bins, reference_weights)
    q = dihedral_histogram(mod, bins, model_weights)
    exact = np.random.default_rng(seed).multinomial(len(mod), p.reshape(-1)).reshape(p.shape)
    kt = GAS_CONSTANT * float(temperature) / KCAL
    return {
        "kl": kl_divergence(p, q),
        "pmf_mse_kcal2": pmf_mse(p, q, temperature),
        "pmf_mse_populated_kcal2": pmf_mse(p, q, temperature, populated_kcal),
        "pmf_mse_populated_floor_kcal2": pmf_mse(
            p, exact / exact.sum(), temperature, populated_kcal
        ),
        "populated_mass": float(p[p >= p.max() * math.exp(-populated_kcal / kt)].sum()),
        "unreached_mass": unreached_mass(p, q),
        "df_model_kT": delta_f(mod[:, df_column], model_weights),
        "df_reference_kT": delta_f(ref[:, df_column], reference_weights),
        "n_reference": int(len(ref)),
        "n_model": int(len(mod)),
        "bins": int(bins),
    }
