"""Can this number be trusted? Diagnostics and a verdict for reweighted estimates.

Plain functions over arrays (NumPy in, typed results out) that a stage calls on each reported
number, e.g. dF along one CV:

* :func:`k_hat`: the Pareto k-hat of the log-weights (PSIS, Vehtari et al. 2024), computed by
  arviz-stats; :func:`k_hat_threshold` is the sample-size dependent limit.
* :func:`stratum_diagnostics`: particles, Kish ESS and k-hat per stratum (backbone state).
* :func:`state_masses`: the flow's (reweighted) mass per state against the data's.
* :func:`agreement`: the data's estimate against the samples' in combined sigma.
* :func:`consistency`: do K independent estimates agree within their stated errors (chi^2)?
* :func:`combine_estimates`: one value from K >= 2 independent runs with an error that
  includes their spread.
* :func:`diagnose` collects these for one number; :func:`verdict` turns them into
  ``reliable`` or ``not converged`` with reasons and advice.
* :func:`data_check` judges the training data's own estimate (its time halves, the states it
  visits); :func:`recommend` says which estimate to quote: the samples' or the data's.

Conventions as in :mod:`boltzgen.analysis`: ``log_w`` (n,) are unnormalised log importance
weights (``-inf`` = weight 0, e.g. a clash); free energies and their errors are in kT; labels
(n,) are any hashable state names (e.g. the sign pattern of the backbone dihedrals ``"+-"``).
Every result has a JSON-able ``to_dict()`` (non-finite floats become ``None``).
"""

from __future__ import annotations

from boltzgen.diagnostics.estimates import (
    Agreement,
    CombinedEstimate,
    Consistency,
    agreement,
    combine_estimates,
    consistency,
)
from boltzgen.diagnostics.judge import EstimateDiagnostics, Verdict, diagnose, verdict
from boltzgen.diagnostics.recommend import DataCheck, Recommendation, data_check, recommend
from boltzgen.diagnostics.thresholds import (
    AGREEMENT_Z_MAX,
    CLASH_FRACTION_MAX,
    CONSISTENCY_P_MIN,
    CUT_MIN_ESS,
    K_HAT_MAX,
    MIN_ESS_PER_STRATUM,
    MIN_PARTICLES_PER_STRATUM,
    MIN_STATE_MASS,
    MISSING_STATE_MASS_RATIO,
)
from boltzgen.diagnostics.weights import (
    StateMass,
    StratumDiagnostics,
    cut_is_degenerate,
    k_hat,
    k_hat_threshold,
    state_masses,
    stratum_diagnostics,
)

__all__ = [
    "AGREEMENT_Z_MAX",
    "CLASH_FRACTION_MAX",
    "CONSISTENCY_P_MIN",
    "CUT_MIN_ESS",
    "K_HAT_MAX",
    "MIN_ESS_PER_STRATUM",
    "MIN_PARTICLES_PER_STRATUM",
    "MIN_STATE_MASS",
    "MISSING_STATE_MASS_RATIO",
    "Agreement",
    "CombinedEstimate",
    "Consistency",
    "DataCheck",
    "EstimateDiagnostics",
    "Recommendation",
    "StateMass",
    "StratumDiagnostics",
    "Verdict",
    "agreement",
    "combine_estimates",
    "cut_is_degenerate",
    "data_check",
    "consistency",
    "diagnose",
    "k_hat",
    "k_hat_threshold",
    "recommend",
    "state_masses",
    "stratum_diagnostics",
    "verdict",
]
