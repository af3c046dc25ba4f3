"""boltzgen.diagnostics: k-hat against known tails, the verdict on constructed cases where the
answer is known to be wrong (or right), and the coverage of stated and combined error bars."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from boltzgen import diagnostics as dg
from boltzgen.analysis import free_energy_difference, n_effective
from boltzgen.diagnostics.judge import _BUDGET, _DATA, _IMPLICIT
from boltzgen.errors import InputError, ShapeError

A, B = (-np.inf, 0.0), (0.0, np.inf)  # states x < 0 and x >= 0 of a 1-D CV


def _labels(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, "A", "B")


def _mixture_logpdf(x: np.ndarray, means, sds, weights) -> np.ndarray:
    parts = [
        np.log(w) + stats.norm.logpdf(x, m, s) for m, s, w in zip(means, sds, weights, strict=True)
    ]
    return np.logaddexp.reduce(parts, axis=0)


def _mixture_draws(rng, n: int, means, sds, weights) -> np.ndarray:
    k = rng.choice(len(means), size=n, p=weights)
    return rng.normal(np.asarray(means)[k], np.asarray(sds)[k])


def _df(x: np.ndarray, log_w: np.ndarray | None = None, seed: int = 0, n_boot: int = 200):
    lw = np.zeros(len(x)) if log_w is None else log_w
    return free_energy_difference(x, x, A, B, n_bootstrap=n_boot, seed=seed, log_weights=lw)


# ----------------------------------------------------------------------------- k-hat
def test_k_hat_threshold_follows_vehtari():
    assert dg.k_hat_threshold(100) == pytest.approx(0.5)
    assert dg.k_hat_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert dg.k_hat_threshold(10_000) == dg.K_HAT_MAX == 0.7
    assert dg.k_hat_threshold(1) == -math.inf


@pytest.mark.parametrize("k", [0.3, 0.5, 0.8, 1.2])
def test_k_hat_recovers_the_shape_of_pareto_weights(k):
    """Weights drawn from a Pareto law with tail index 1/k have generalised-Pareto shape k
    exactly: the mean k-hat over 20 seeds (sd of a single estimate about 0.1 at S = 4000, so
    about 0.03 for the mean) must lie within 0.1. A flipped sign convention gives k-hat < 0."""
    rng = np.random.default_rng(1)
    ks = [dg.k_hat(np.log1p(rng.pareto(1 / k, size=4000))) for _ in range(20)]
    assert abs(np.mean(ks) - k) < 0.1, ks


def test_k_hat_edge_cases():
    assert dg.k_hat(np.zeros(1000)) == -math.inf  # uniform weights: bounded tail
    assert math.isnan(dg.k_hat(np.zeros(24)))  # too few to fit a tail
    lw = np.log1p(np.random.default_rng(0).pareto(2.0, size=2000))
    with_zeros = np.concatenate([lw, np.full(500, -np.inf)])  # clashes: weight 0
    assert dg.k_hat(with_zeros) == dg.k_hat(lw)
    with pytest.raises(InputError, match="NaN"):
        dg.k_hat([0.0, np.nan])


@pytest.mark.parametrize("sd", [30.0, 300.0, 1000.0])
def test_k_hat_of_astronomically_spread_weights_is_large(sd):
    """An untrained flow's log-weights spread over thousands of nats: the largest weight is
    e^1000 times the tail's threshold. The fit exponentiates the tail, and past ~745 nats the
    ties at 0 once gave k ~ 0.07, a healthy-looking value for the worst weights."""
    lw = np.random.default_rng(0).normal(0.0, sd, size=500)
    assert dg.k_hat(lw) > 5.0


def test_narrow_gaussian_proposal_gives_heavy_tails():
    """q = N(0, 1) for p = N(0, s^2): w ~ exp(x^2 (1 - 1/s^2) / 2) has k = 1 - 1/s^2."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=4000)
    wide = dg.k_hat(stats.norm.logpdf(x, scale=4.0) - stats.norm.logpdf(x))
    narrow = dg.k_hat(stats.norm.logpdf(x, scale=0.8) - stats.norm.logpdf(x))
    assert wide > dg.K_HAT_MAX and narrow < 0


# ----------------------------------------------------------------------------- parts
def test_stratum_diagnostics_counts_particles_per_stratum():
    lw = np.array([0.0, 0.0, np.log(3.0), -np.inf, 0.0])
    labels = np.array(["+", "-", "-", "-", "+"])
    s = {d.label: d for d in dg.stratum_diagnostics(lw, labels)}
    assert s["+"].n_particles == 2 and s["-"].n_particles == 2  # the clash is not a particle
    assert s["+"].ess_count == pytest.approx(2.0)
    assert s["-"].ess_count == pytest.approx(16 / 10)  # (1 + 3)^2 / (1 + 9)
    assert s["+"].mass == pytest.approx(2 / 6) and s["-"].mass == pytest.approx(4 / 6)
    with pytest.raises(ShapeError, match="labels"):
        dg.stratum_diagnostics(lw, labels[:3])


def test_state_masses_weigh_samples_and_frames():
    masses = dg.state_masses(
        ["a", "a", "b"], ["a", "b", "b", "c"], [0.0, 0.0, np.log(2.0)], [1.0, 1.0, 1.0, 2.0]
    )
    m = {x.label: x for x in masses}
    assert m["a"].flow_mass == pytest.approx(0.5) and m["b"].flow_mass == pytest.approx(0.5)
    assert m["a"].data_mass == pytest.approx(0.2) and m["c"].data_mass == pytest.approx(0.4)
    assert m["c"].flow_mass == 0 and m["c"].n_samples == 0 and m["c"].missing
    assert not m["a"].missing
    with pytest.raises(InputError, match="data_weights"):
        dg.state_masses(["a"], ["a"], data_weights=[-1.0])


def test_agreement_and_consistency():
    g = dg.agreement(1.0, 0.3, 2.0, 0.4)
    assert g.z == pytest.approx(2.0)
    assert dg.agreement(1.0, 0.3, -np.inf, np.inf).z == math.inf
    assert dg.agreement(1.0, 0.3, 1.5, np.inf).z == 0.0  # an infinite error says nothing
    c = dg.consistency([1.0, 2.0], [0.3, 0.4])
    assert c.chi2 == pytest.approx(4.0) and c.dof == 1
    assert c.p_value == pytest.approx(2 * stats.norm.sf(2.0))
    assert dg.consistency([1.0, np.inf], [0.1, 0.1]).p_value == 0.0
    with pytest.raises(InputError, match="at least 2"):
        dg.consistency([1.0], [0.1])
    with pytest.raises(ShapeError):
        dg.consistency([1.0, 2.0], [0.1])


def test_combined_error_is_the_birge_inflation_for_equal_errors():
    v, e = np.array([1.0, 1.6, 2.5]), np.full(3, 0.2)
    c = dg.combine_estimates(v, e)
    chi2 = dg.consistency(v, e).chi2
    assert c.value == pytest.approx(v.mean())
    assert c.stated_error == pytest.approx(0.2 / math.sqrt(3))
    assert c.error == pytest.approx(c.stated_error * max(1.0, math.sqrt(chi2 / 2)))
    agree = dg.combine_estimates([1.0, 1.01], [0.2, 0.2])
    assert agree.error == pytest.approx(agree.stated_error)  # no spread: the stated floor


# ----------------------------------------------------------------------------- the verdict
def _case(target, proposal, seed: int, n: int = 4000, n_data: int = 2000):
    """Exact log-weights of proposal draws for a 1-D target, and iid data from the target."""
    rng = np.random.default_rng(seed)
    x = _mixture_draws(rng, n, *proposal)
    lw = _mixture_logpdf(x, *target) - _mixture_logpdf(x, *proposal)
    data = _mixture_draws(rng, n_data, *target)
    return x, lw, data


def _diagnose(x, lw, data, independent=None):
    value, error = _df(x, lw)
    return dg.diagnose(
        lw,
        value,
        error,
        labels=_labels(x),
        data_labels=_labels(data),
        data_estimate=_df(data),
        independent=independent,
        clash_fraction=0.0,
    )


TWO_STATES = ([-3.0, 3.0], [0.5, 0.5], [0.5, 0.5])


def test_verdict_flags_a_flow_that_misses_a_state():
    one_state = ([-3.0], [0.5], [1.0])  # covers A only: x >= 0 has q-mass 1e-9
    x, lw, data = _case(TWO_STATES, one_state, seed=3)
    d = _diagnose(x, lw, data)
    v = dg.verdict(d)
    assert v.status == "not converged" and "missing_state" in v.codes
    assert any("misses state B" in r for r in v.reasons)
    assert _DATA in v.advice
    # the weights on the covered state are nearly uniform: k-hat alone would not see it
    assert d.k_hat < 0.5, d.k_hat


def test_verdict_flags_heavy_tailed_weights():
    """A proposal 4x narrower than the target: k = 1 - 1/16 = 0.94 in the limit; at S = 16000
    draws k-hat is 0.82 +- 0.10 (pre-asymptotic Gaussian tails) and the verdict flipped on 29 of
    30 seeds tried (the seed here is fixed)."""
    target, narrow = ([0.0], [4.0], [1.0]), ([0.0], [1.0], [1.0])
    x, lw, data = _case(target, narrow, seed=4, n=16_000)
    d = _diagnose(x, lw, data)
    v = dg.verdict(d, implicit_solvent=True)
    assert v.status == "not converged" and "k_hat" in v.codes
    assert "missing_state" not in v.codes  # both states are covered, just badly weighted
    assert v.advice[0] == _BUDGET and v.advice[-1] == _IMPLICIT


def test_verdict_reliable_for_a_well_matched_proposal():
    target = ([-1.5, 1.5], [0.6, 0.6], [0.5, 0.5])
    proposal = ([-1.5, 1.5], [0.7, 0.7], [0.45, 0.55])  # a bit wider: bounded weights
    runs = [_case(target, proposal, seed=s) for s in (5, 6)]
    dfs = [_df(x, lw) for x, lw, _ in runs]
    independent = ([v for v, _ in dfs], [e for _, e in dfs])
    d = _diagnose(*runs[0], independent=independent)
    v = dg.verdict(d)
    assert v.status == "reliable", v.reasons
    assert v.reasons == [] and v.advice == [] and v.reliable
    out = json.loads(json.dumps(d.to_dict()))
    assert out["strata"][0]["label"] == "A" and out["consistency"]["dof"] == 1
    assert json.loads(json.dumps(v.to_dict()))["status"] == "reliable"


def test_verdict_flags_disagreeing_flows_few_particles_and_clashes():
    base = dg.EstimateDiagnostics(value=1.0, error=0.1)
    assert dg.verdict(base).reliable  # nothing measured, nothing judged
    few = dg.StratumDiagnostics("+-", 40, 30.0, 0.75, 0.1, dg.k_hat_threshold(40), 0.3)
    tiny = dg.StratumDiagnostics("--", 3, 2.0, 0.7, 0.1, -math.inf, 0.001)  # not judged
    d = dg.EstimateDiagnostics(
        value=1.0,
        error=0.1,
        strata=(few, tiny),
        consistency=dg.consistency([1.0, 2.0], [0.1, 0.2]),
        clash_fraction=0.95,
    )
    v = dg.verdict(d)
    assert v.codes == ["too_few_particles", "flows_disagree", "clashes"]
    assert "stratum +-: 40 particles" in v.reasons[0]
    assert dg.verdict(dg.EstimateDiagnostics(value=-np.inf, error=np.inf)).codes == ["no_estimate"]
    assert json.dumps(dg.Verdict("not converged", ["x"], ["k_hat"], ["y"]).to_dict())


# ----------------------------------------------------------------------------- which to quote
def _halves(data: np.ndarray):
    h = len(data) // 2
    return _df(data[:h]), _df(data[h:])


def test_recommend_quotes_the_data_when_the_flow_misses_a_state():
    """The proposal covers state A only: the samples carry no estimate, the data (iid from
    the target, exact dF = 0) pass their checks and are quoted, and their error covers the
    truth."""
    one_state = ([-3.0], [0.5], [1.0])
    x, lw, data = _case(TWO_STATES, one_state, seed=3)
    d = _diagnose(x, lw, data)
    v = dg.verdict(d)
    check = dg.data_check(*_halves(data), states=d.states)
    assert check.ok and abs(check.z) < 2.0
    samples = _df(x, lw)
    rec = dg.recommend(samples, v, _df(data), check)
    assert rec.source == "data" and rec.df_kT == _df(data)[0]
    assert abs(rec.df_kT - 0.0) < 2.5 * rec.err_kT
    assert json.loads(json.dumps(rec.to_dict()))["source"] == "data"
    assert json.loads(json.dumps(check.to_dict()))["ok"] is True


def test_recommend_keeps_the_samples_when_reliable_or_tighter():
    target = ([-1.5, 1.5], [0.6, 0.6], [0.5, 0.5])
    x, lw, data = _case(target, ([-1.5, 1.5], [0.7, 0.7], [0.45, 0.55]), seed=5)
    d = _diagnose(x, lw, data)
    v = dg.verdict(d)
    assert v.reliable
    check = dg.data_check(*_halves(data), states=d.states)
    samples = _df(x, lw)
    tighter_data = (_df(data)[0], samples[1] / 10)
    rec = dg.recommend(samples, v, tighter_data, check)
    assert rec.source == "samples" and rec.df_kT == samples[0]  # reliable: quoted as is
    stuck = dg.Verdict("not converged", ["x"], ["k_hat"], ["y"])
    looser_data = (_df(data)[0], samples[1] * 2)
    rec = dg.recommend(samples, stuck, looser_data, check)
    assert rec.source == "samples" and "error is larger" in rec.why
    assert dg.recommend(samples, stuck, tighter_data, check).source == "data"
    assert dg.recommend(None, stuck, None, None).source == "none"


def test_data_check_fails_data_that_drift_or_never_visit_a_state():
    """A sampler stuck in A for the first half and in B for the second gives a tight,
    wrong dF: its halves disagree. A state the samples weight with no data frame fails too."""
    rng = np.random.default_rng(7)
    first = _mixture_draws(rng, 1000, [-3.0, 3.0], [0.5, 0.5], [0.8, 0.2])
    second = _mixture_draws(rng, 1000, [-3.0, 3.0], [0.5, 0.5], [0.2, 0.8])
    check = dg.data_check(*_halves(np.concatenate([first, second])))
    assert not check.ok and check.z > dg.AGREEMENT_Z_MAX
    assert "halves disagree" in check.reasons[0]
    stuck = dg.Verdict("not converged", ["x"], ["k_hat"], ["y"])
    rec = dg.recommend((0.5, 1.0), stuck, (0.0, 0.05), check)
    assert rec.source == "samples" and "halves disagree" in rec.why
    unseen = dg.StateMass("B", data_mass=0.0, flow_mass=0.3, n_samples=300)
    seen = dg.StateMass("A", data_mass=1.0, flow_mass=0.7, n_samples=700)
    check = dg.data_check((0.1, 0.1), (0.12, 0.1), states=(seen, unseen))
    assert not check.ok and check.unvisited == ("B",)
    assert not dg.data_check(None, (0.1, 0.1)).ok  # a half with no estimate


# ----------------------------------------------------------------------------- coverage
def _u(x):
    return 3.0 * (x**2 - 1.0) ** 2 + 0.5 * x  # tilted double well (kT)


def test_stated_and_combined_errors_cover_the_closed_form_at_the_nominal_rate():
    """400 repetitions of two independent runs (different proposals, different seeds) of
    importance sampling of a tilted 1-D double well; the basin dF = F(x >= 0) - F(x < 0) is
    known by quadrature.

    Tolerance: for a correct error bar |z| <= 2 holds with p = 0.9545; over 400 independent
    repetitions the observed rate has binomial sd sqrt(p (1 - p) / 400) = 0.0104. Lower
    bound p - 3 sd = 0.923 (a correct method fails it with probability 0.13 %; an error bar
    20 % too small covers 0.91 and fails). Upper bound for the single run p + 3 sd = 0.986
    (a bar 1.5x too large covers 0.997 and fails). The combined error is conservative by
    design (0.967 for correct equal errors at K = 2, see combine_estimates): its upper bound
    0.99 still fails a bar 1.5x too large. The master seed is fixed, so the test is exact.
    """
    z_a = integrate.quad(lambda t: np.exp(-_u(t)), -np.inf, 0)[0]  # A = x < 0
    z_b = integrate.quad(lambda t: np.exp(-_u(t)), 0, np.inf)[0]
    exact = -math.log(z_a / z_b)
    proposals = [([-1.0, 1.0], [0.45, 0.45], [0.5, 0.5]), ([-1.0, 1.0], [0.55, 0.55], [0.6, 0.4])]
    master = np.random.default_rng(20261204)
    single, combined = [], []
    for rep in range(400):
        runs = []
        for q in proposals:
            x = _mixture_draws(master, 1000, *q)
            lw = -_u(x) - _mixture_logpdf(x, *q)
            runs.append(_df(x, lw, seed=rep, n_boot=100))
        single.append(abs(runs[0][0] - exact) / runs[0][1])
        c = dg.combine_estimates([r[0] for r in runs], [r[1] for r in runs])
        combined.append(abs(c.value - exact) / c.error)
    single_rate, combined_rate = np.mean(np.array(single) <= 2), np.mean(np.array(combined) <= 2)
    assert 0.923 <= single_rate <= 0.986, single_rate
    assert 0.923 <= combined_rate <= 0.99, combined_rate


def test_a_refinement_cut_at_its_time_limit_is_not_converged():
    """Coverage runs at 2 minutes: refinements that jumped to the target at their time limit
    came out 'reliable' while missing by 4-6 kT (resampled final weights: k-hat -3.9), so a cut
    refinement is a reason of its own."""
    good = dg.EstimateDiagnostics(value=1.0, error=0.1)
    assert dg.verdict(good).reliable
    v = dg.verdict(dg.EstimateDiagnostics(value=1.0, error=0.1, refinement_cut=True))
    assert v.status == "not converged" and v.codes == ["refinement_cut"]
    assert "ran out of time" in v.reasons[0] and v.advice
    d = dg.diagnose(np.zeros(50), 1.0, 0.1, refinement_cut=True)
    assert d.refinement_cut and not dg.verdict(d).reliable


def test_a_cut_is_judged_by_its_jump_weights_before_resampling():
    """One-hour coverage runs (ADP, ACE-PRO-NME) were cut at the time limit in one stratum,
    yet hit their references within 0.3 sigma: the jump's own weights were healthy. The cut is
    a reason only when those weights are degenerate (k-hat, or under CUT_MIN_ESS effective)."""
    rng = np.random.default_rng(0)
    healthy = rng.normal(scale=0.3, size=4000)  # light-tailed log-weights
    heavy = rng.standard_cauchy(size=4000) * 3.0  # a few draws carry everything
    rec = {"beta_from": 0.7, "n_particles": 4000}
    ok = {**rec, "ess_count": n_effective(healthy), "k_hat": dg.k_hat(healthy)}
    bad = {**rec, "ess_count": n_effective(heavy), "k_hat": dg.k_hat(heavy)}
    assert not dg.cut_is_degenerate(ok)
    assert dg.cut_is_degenerate(bad)
    assert dg.cut_is_degenerate({**ok, "ess_count": dg.CUT_MIN_ESS - 1})
    assert dg.cut_is_degenerate(None)  # stopped without a record (older checkpoint)
    assert dg.cut_is_degenerate({**ok, "k_hat": float("nan")})


def test_the_pipeline_flags_only_degenerate_cuts():
    from types import SimpleNamespace

    from boltzgen.pipeline.analysis import _degenerate_cut

    ok = {"ess_count": 3000.0, "k_hat": 0.1, "n_particles": 4000}
    bad = {"ess_count": 12.0, "k_hat": 1.4, "n_particles": 4000}

    def samples(*rows, **top):
        return SimpleNamespace(history={"strata": list(rows), **top})

    assert not _degenerate_cut(SimpleNamespace(history=None))  # plain flow draws
    assert not _degenerate_cut(samples({"stopped_at_time_limit": False, "cuts": []}))
    assert not _degenerate_cut(samples({"stopped_at_time_limit": True, "cuts": [ok]}))
    assert _degenerate_cut(samples({"stopped_at_time_limit": True, "cuts": [ok, bad]}))
    assert _degenerate_cut(samples({"stopped_at_time_limit": True}))  # no record
    top = SimpleNamespace(history={"stopped_at_time_limit": True, "cut": ok})
    assert not _degenerate_cut(top)
    assert _degenerate_cut(SimpleNamespace(history={"stopped_at_time_limit": True, "cut": bad}))
