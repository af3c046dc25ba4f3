"""One reported number's diagnostics and its verdict: ``reliable`` or ``not converged`` with
reasons and advice."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from boltzgen.analysis import as_log_weights, n_effective
from boltzgen.diagnostics._base import _ToDict
from boltzgen.diagnostics.estimates import Agreement, Consistency, agreement, consistency
from boltzgen.diagnostics.thresholds import (
    AGREEMENT_Z_MAX,
    CLASH_FRACTION_MAX,
    CONSISTENCY_P_MIN,
    CUT_MIN_ESS,
    MIN_ESS_PER_STRATUM,
    MIN_PARTICLES_PER_STRATUM,
    MIN_STATE_MASS,
)
from boltzgen.diagnostics.weights import (
    StateMass,
    StratumDiagnostics,
    k_hat,
    k_hat_threshold,
    state_masses,
    stratum_diagnostics,
)
from boltzgen.errors import InputError

ReasonCode = Literal[
    "no_estimate",
    "k_hat",
    "missing_state",
    "too_few_particles",
    "flows_disagree",
    "data_disagree",
    "clashes",
    "refinement_cut",
]

_BUDGET = (
    "a longer budget: more training and more draws (or SMC steps) thin the weights' tail and "
    "fill the weak strata (`boltzgen run` already gives any time the stages leave to the "
    "weakest stratum)"
)
_DATA = (
    "more data: run the data sampler (replica exchange or metadynamics) longer so that it "
    "visits every backbone state, then train again"
)
_IMPLICIT = (
    "implicit solvent costs several times more per energy evaluation than vacuum: give it a "
    "proportionally longer budget"
)
_ADVICE: dict[str, tuple[str, ...]] = {
    "no_estimate": (_BUDGET,),
    "k_hat": (_BUDGET,),
    "missing_state": (_DATA, _BUDGET),
    "too_few_particles": (_BUDGET,),
    "flows_disagree": (_BUDGET,),
    "data_disagree": (_DATA, _BUDGET),
    "clashes": (_BUDGET,),
    "refinement_cut": (_BUDGET,),
}


@dataclass(frozen=True)
class EstimateDiagnostics(_ToDict):
    """Everything :func:`verdict` judges about one reported number (kT).

    value, error: the number and its stated error; n_samples: draws; ess_count /
    ess_fraction: Kish ESS of all draws; k_hat / k_hat_threshold: of all draws' log-weights;
    strata, states, agreement, consistency, clash_fraction: optional parts (None / empty when
    not measured, and then not judged); refinement_cut: the refinement behind the draws ran
    out of time and its jump to the target left degenerate weights
    (:func:`~boltzgen.diagnostics.cut_is_degenerate` of its ``cut`` record).
    """

    value: float
    error: float
    n_samples: int = 0
    ess_count: float = float("nan")
    ess_fraction: float = float("nan")
    k_hat: float = float("nan")
    k_hat_threshold: float = float("nan")
    strata: tuple[StratumDiagnostics, ...] = ()
    states: tuple[StateMass, ...] = ()
    agreement: Agreement | None = None
    consistency: Consistency | None = None
    clash_fraction: float | None = None
    refinement_cut: bool = False


@dataclass(frozen=True)
class Verdict(_ToDict):
    """``reliable`` or ``not converged``; reasons (sentences) with their codes (one per
    reason, from ``ReasonCode``) and what to do about them."""

    status: Literal["reliable", "not converged"]
    reasons: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def reliable(self) -> bool:
        return self.status == "reliable"


def diagnose(
    log_w: Any,
    value: float,
    error: float,
    *,
    labels: Any = None,
    data_labels: Any = None,
    data_weights: Any = None,
    data_estimate: tuple[float, float] | None = None,
    independent: tuple[Sequence[float], Sequence[float]] | None = None,
    clash_fraction: float | None = None,
    refinement_cut: bool = False,
) -> EstimateDiagnostics:
    """Diagnostics of one reweighted number (kT) from its draws' (n,) log-weights.

    Args:
        log_w: (n,) log-weights of the draws the number was computed from.
        value, error: the number and its stated error (kT).
        labels: (n,) state / stratum per draw (e.g. backbone sign pattern): per-stratum
            diagnostics, and with ``data_labels`` the mass per state.
        data_labels, data_weights: (m,) state per data frame and (m,) frame weights (None:
            uniform).
        data_estimate: (value, error) of the same number from the data alone.
        independent: (values (K,), errors (K,)) of the same number from K >= 2 independently
            trained flows (this run's included).
        clash_fraction: fraction in [0, 1] of the flow's draws that clashed (infinite energy).
        refinement_cut: the draws come from a refinement stopped at its time limit whose jump
            to the target left degenerate weights (its last level reweighted straight to the
            target and resampled, so the final weights' ESS and k-hat no longer show the
            estimate's variance; the jump's own weights, recorded before resampling, do).
    """
    a = as_log_weights(log_w)
    n = len(a)
    n_eff = n_effective(a)
    strata: list[StratumDiagnostics] = []
    states: list[StateMass] = []
    if labels is not None:
        strata = stratum_diagnostics(a, labels)
        if data_labels is not None:
            states = state_masses(labels, data_labels, a, data_weights)
    elif data_labels is not None:
        raise InputError("data_labels need the draws' labels too (labels=...)")
    if clash_fraction is not None and not 0.0 <= float(clash_fraction) <= 1.0:
        raise InputError(f"clash_fraction must be in [0, 1], got {clash_fraction}")
    return EstimateDiagnostics(
        value=float(value),
        error=float(error),
        n_samples=n,
        ess_count=float(n_eff),
        ess_fraction=float(n_eff / n),
        k_hat=k_hat(a),
        k_hat_threshold=k_hat_threshold(int(np.isfinite(a).sum())),
        strata=tuple(strata),
        states=tuple(states),
        agreement=None if data_estimate is None else agreement(*data_estimate, value, error),
        consistency=None if independent is None else consistency(*independent),
        clash_fraction=None if clash_fraction is None else float(clash_fraction),
        refinement_cut=bool(refinement_cut),
    )


def _judged(s: StratumDiagnostics, data_mass: Mapping[str, float]) -> bool:
    # only strata that matter: enough mass by the samples' or the data's account
    m = max(0.0 if math.isnan(s.mass) else s.mass, data_mass.get(s.label, 0.0))
    return m >= MIN_STATE_MASS or (math.isnan(s.mass) and s.label not in data_mass)


def _reasons(d: EstimateDiagnostics) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def add(code: ReasonCode, why: str) -> None:
        out.append((code, why))

    if not (math.isfinite(d.value) and math.isfinite(d.error)):
        add("no_estimate", f"the estimate or its error is not finite ({d.value} +- {d.error})")
    if d.k_hat > d.k_hat_threshold:
        add(
            "k_hat",
            f"k-hat of the weights {d.k_hat:.2f} > {d.k_hat_threshold:.2f} "
            f"({d.n_samples} draws): the weights are too heavy-tailed to trust",
        )
    data_mass = {s.label: s.data_mass for s in d.states}
    for s in (s for s in d.strata if _judged(s, data_mass)):
        if s.k_hat > s.k_hat_threshold:
            add(
                "k_hat",
                f"stratum {s.label}: k-hat {s.k_hat:.2f} > {s.k_hat_threshold:.2f} "
                f"({s.n_particles} particles)",
            )
        if s.n_particles < MIN_PARTICLES_PER_STRATUM or s.ess_count < MIN_ESS_PER_STRATUM:
            add(
                "too_few_particles",
                f"stratum {s.label}: {s.n_particles} particles, ESS "
                f"{s.ess_count:.1f} (need >= {MIN_PARTICLES_PER_STRATUM}, >= "
                f"{MIN_ESS_PER_STRATUM:g})",
            )
    for m in (m for m in d.states if m.missing):
        add(
            "missing_state",
            f"the flow misses state {m.label}: mass {m.flow_mass:.3g} against "
            f"the data's {m.data_mass:.3g} ({m.n_samples} draws there)",
        )
    c = d.consistency
    if c is not None and c.p_value < CONSISTENCY_P_MIN:
        vals = ", ".join(f"{x:.2f} +- {e:.2f}" for x, e in zip(c.values, c.errors, strict=True))
        add(
            "flows_disagree",
            f"independent flows disagree beyond their errors ({vals}; "
            f"chi^2 {c.chi2:.1f} on {c.dof} dof, p = {c.p_value:.2g})",
        )
    g = d.agreement
    if g is not None and g.z > AGREEMENT_Z_MAX:
        add(
            "data_disagree",
            f"data and samples disagree: {g.data:.2f} +- {g.data_error:.2f} "
            f"vs {g.samples:.2f} +- {g.samples_error:.2f} ({g.z:.1f} combined sigma)",
        )
    if d.refinement_cut:
        add(
            "refinement_cut",
            "the refinement ran out of time and jumped to the target in one reweighting whose "
            "weights are degenerate (k-hat above its threshold or fewer than "
            f"{CUT_MIN_ESS:.0f} effective particles before resampling); the final weights "
            "were resampled, so their ESS and k-hat understate the error",
        )
    if d.clash_fraction is not None and d.clash_fraction > CLASH_FRACTION_MAX:
        add(
            "clashes",
            f"{d.clash_fraction:.0%} of the flow's draws clash (> "
            f"{CLASH_FRACTION_MAX:.0%}): its few valid draws cannot be trusted to cover the "
            "target",
        )
    return out


def verdict(diagnostics: EstimateDiagnostics, *, implicit_solvent: bool = False) -> Verdict:
    """``reliable``, or ``not converged`` with every reason found and what to do.

    Judged (thresholds are this module's constants): a non-finite estimate or error; k-hat
    above its threshold, for all draws and per stratum; too few particles or ESS in a stratum;
    a state the flow misses; independent flows that disagree (chi^2); data and samples that
    disagree (z). Strata and states holding less than MIN_STATE_MASS are not judged.

    Args:
        diagnostics: from :func:`diagnose` (or built by hand).
        implicit_solvent: add that implicit solvent needs a proportionally longer budget.
    """
    found = _reasons(diagnostics)
    if not found:
        return Verdict("reliable")
    advice: list[str] = []
    for code, _ in found:
        for a in _ADVICE[code]:
            if a not in advice:
                advice.append(a)
    if implicit_solvent:
        advice.append(_IMPLICIT)
    return Verdict(
        "not converged",
        reasons=[r for _, r in found],
        codes=[c for c, _ in found],
        advice=advice,
    )
