"""Which of two estimates of one number to quote: the refined samples' or the training
data's.

A run has two estimates of each dF: the flow's samples (refined, reweighted to the target) and
the training data alone (REMD's target replica, or metadynamics reweighted). When the flow is
poor (a few effective draws, k-hat high) its number is ``not converged`` while the data's can
be tighter and right: on ACE-GLY-GLY-PRO-NME's one-hour runs the data's dF missed a six-seed
reference by <= 0.04 kT with errors covering the misses, the refined samples' by up to 0.26 kT
(RESULTS.md, 2026-12-06). The data's number is only as good as its sampling, so it is quoted
only when its own checks pass: its two time halves agree within their errors, and it holds
every state the samples put weight on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from boltzgen.diagnostics._base import _ToDict
from boltzgen.diagnostics.estimates import _z
from boltzgen.diagnostics.judge import Verdict
from boltzgen.diagnostics.thresholds import AGREEMENT_Z_MAX, MIN_STATE_MASS
from boltzgen.diagnostics.weights import StateMass

Pair = tuple[float, float] | None


def _finite(p: Pair) -> bool:
    return p is not None and all(math.isfinite(x) for x in p)


@dataclass(frozen=True)
class DataCheck(_ToDict):
    """The data's estimate judged without the flow (kT): its first and second time halves
    (None where a half has no finite estimate), their distance in combined sigma, and the
    states the samples weight (>= MIN_STATE_MASS) that the data never visit."""

    first: Pair
    second: Pair
    z: float
    unvisited: tuple[str, ...] = ()
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {**super().to_dict(), "ok": self.ok}


def data_check(first: Pair, second: Pair, states: Sequence[StateMass] = ()) -> DataCheck:
    """Judge the data's estimate from its two time halves' (value, error) and the states'
    masses (:func:`~boltzgen.diagnostics.state_masses`: data against samples).

    Fails when a half has no finite estimate (the data visit a side in one half only), when
    the halves disagree by more than AGREEMENT_Z_MAX combined sigma (not converged in time),
    or when the samples put >= MIN_STATE_MASS on a state with no data frame (the data never
    found it; its error bar cannot show that)."""
    reasons: list[str] = []
    z = float("nan")
    if not (_finite(first) and _finite(second)):
        reasons.append("a time half of the data has no finite estimate")
    else:
        z = _z(first[0], first[1], second[0], second[1])
        if not z <= AGREEMENT_Z_MAX:
            reasons.append(
                f"the data's halves disagree: {first[0]:.2f} +- {first[1]:.2f} vs "
                f"{second[0]:.2f} +- {second[1]:.2f} ({z:.1f} combined sigma)"
            )
    unvisited = tuple(s.label for s in states if s.flow_mass >= MIN_STATE_MASS and s.data_mass == 0)
    if unvisited:
        reasons.append(f"the data never visit state(s) {', '.join(unvisited)} the samples weight")
    return DataCheck(first=first, second=second, z=z, unvisited=unvisited, reasons=reasons)


@dataclass(frozen=True)
class Recommendation(_ToDict):
    """The estimate to quote (kT): ``source`` ``samples`` (the refined flow's), ``data`` (the
    training data's) or ``none``, and why."""

    source: Literal["samples", "data", "none"]
    df_kT: float | None
    err_kT: float | None
    why: str


def recommend(
    samples: Pair, samples_verdict: Verdict, data: Pair, check: DataCheck | None
) -> Recommendation:
    """The estimate to quote from the samples' (value, error) with their verdict and the
    data's (value, error) with its :func:`data_check`.

    Samples when their verdict is ``reliable``; otherwise the data when they pass their check
    and state an error no larger than the samples' (or the samples have none); otherwise the
    samples (still ``not converged``); ``none`` when neither has a finite estimate."""
    if samples_verdict.reliable and _finite(samples):
        return Recommendation("samples", *samples, why="the samples' verdict is reliable")
    data_ok = _finite(data) and check is not None and check.ok
    if data_ok and (not _finite(samples) or data[1] <= samples[1]):
        why = (
            "the samples are not converged and the data's estimate passes its checks (time "
            f"halves within {AGREEMENT_Z_MAX:g} sigma, every weighted state visited) with "
            "an error no larger"
        )
        return Recommendation("data", *data, why=why)
    if _finite(samples):
        if not _finite(data):
            why = "not converged; the data have no finite estimate"
        elif check is not None and not check.ok:
            why = "not converged; the data's estimate fails its checks: " + "; ".join(check.reasons)
        else:
            why = "not converged; the data's error is larger"
        return Recommendation("samples", *samples, why=why)
    return Recommendation("none", None, None, why="neither samples nor data give an estimate")
