"""Time left after the refinement goes to the weakest stratum (boltzgen.refinement.topup,
boltzgen.pipeline.leftover): the merged population stays an exact estimator on an analytic
target, and on alanine dipeptide the left-over time goes to the stratum with the fewest
effective particles, within the time left, and a rerun resumes it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from test_refinement import LOG_Z_MINOR, lq3, mixture_draws, sign_strata, strata3, u3

from boltzgen.analysis import log_mean_exp
from boltzgen.errors import InputError
from boltzgen.refinement import RefinedSamples, refine
from boltzgen.refinement.topup import merge_stratum, stratum_effective_particles, weakest_stratum
from boltzgen.samples import Samples

torch.set_num_threads(1)


def _samples(n: int, seed: int, side: str | None = None) -> Samples:
    """n draws of the proposal (restricted to one side of x = 0 when given)."""
    rng = np.random.default_rng(seed)
    x = mixture_draws(8 * n if side else n, seed)
    if side:
        x = x[sign_strata(x) == side][:n]
    x = np.concatenate([x, rng.normal(size=(len(x), 1))], axis=1).reshape(len(x), 1, 3)
    return Samples(
        positions=x.astype(np.float32),
        log_q=np.zeros(len(x)),
        reduced_energy=np.zeros(len(x)),
        log_weights=np.zeros(len(x)),
    )


def test_merged_stratum_is_still_an_exact_estimator():
    """More particles for one stratum, merged: the weights still average to the strata's Z
    (to rounding), log Z agrees with quadrature within the seed-to-seed error, the stratum's
    particles and effective particles grow, and the other stratum is untouched."""
    mass = {"+": 0.5, "-": 0.5}  # the mixture proposal's exact q(x > 0)
    log_z = []
    for seed in range(6):
        r = refine(_samples(100, seed), u3, log_q=lq3, strata=strata3, strata_mass=mass, seed=seed)
        assert isinstance(r, RefinedSamples)
        weak = weakest_stratum(r)
        rows = {row["label"]: row for row in r.history["strata"]}
        assert stratum_effective_particles(weak) == min(
            stratum_effective_particles(row) for row in rows.values()
        )
        more = refine(
            _samples(300, 100 + seed, "+"),
            u3,
            log_q=lq3,
            strata=strata3,
            strata_mass={"+": 0.5},
            seed=seed,
        )
        m = merge_stratum(r, more, "+", n_draws=1_000_000)
        after = {row["label"]: row for row in m.history["strata"]}
        assert len(m) == len(r) + 300 and after["+"]["n"] == rows["+"]["n"] + 300
        assert after["-"] == rows["-"]
        assert stratum_effective_particles(after["+"]) > stratum_effective_particles(rows["+"])
        assert log_mean_exp(m.log_weights) == pytest.approx(m.log_z, abs=1e-9)
        k = [row["label"] for row in m.history["strata"]].index("+")
        assert set(strata3(m.positions[m.extra["stratum"] == k])) == {"+"}
        assert np.sum(m.extra["stratum"] == k) == after["+"]["n"]
        log_z.append(m.log_z)
    log_z = np.array(log_z)
    exact = LOG_Z_MINOR + 0.5 * math.log(2 * math.pi)  # z ~ N(0, 1) in the target too
    assert abs(log_z.mean() - exact) < 4 * log_z.std(ddof=1) / math.sqrt(6) + 2e-3
    with pytest.raises(InputError, match="stratum"):
        merge_stratum(r, more, "-", n_draws=10)


@pytest.fixture(scope="module")
def adp_refined():
    """An untrained small flow on alanine dipeptide, its draws and a short stratified
    refinement of them (a run whose refinement ended before its time did)."""
    import boltzgen as bg
    from boltzgen.refinement.planning import measure_rates, refine_within

    system = bg.System.alanine_dipeptide()
    md = bg.load_md("data/adp-vacuum-300K.h5")
    torch.manual_seed(0)
    gen = bg.BoltzmannGenerator.build(
        system, data=md.trajectory[::20], n_layers=1, hidden=(8,), n_components=2
    )
    gen.energy = bg.EnergyModel(system, platform="Reference")
    drawn = gen.sample(300)
    ok = np.isfinite(drawn.log_weights)
    eval_s = measure_rates(gen, drawn.positions[ok])["energy_force_s"]
    refined, rec = refine_within(gen, drawn, 1.0, eval_seconds=eval_s, n_steps=1)
    # the pipeline plans the left-over time with the refinement's measured rate
    return gen, drawn, refined, rec["seconds"] / rec["n_energy_evals"]


def test_leftover_goes_to_the_weakest_stratum_within_the_time_left(adp_refined, tmp_path):
    from boltzgen.pipeline.config import PipelineConfig, budget_split
    from boltzgen.pipeline.leftover import leftover_stage
    from boltzgen.pipeline.records import Clock, Stages

    gen, drawn, refined, eval_s = adp_refined
    config = PipelineConfig(budget_minutes=0.5, refine_steps=1, seed=0)
    weak = weakest_stratum(refined)
    before = {r["label"]: stratum_effective_particles(r) for r in refined.history["strata"]}
    available = 7.0
    t0 = time.perf_counter()
    stages = Stages(tmp_path)
    clock = Clock(budget_split(config), None, None)
    args = ([gen], [drawn], [refined], config, t0 + available, eval_s, tmp_path, stages, "fp")
    finals, rec = leftover_stage(*args, clock, resumable=True)
    spent = time.perf_counter() - t0
    assert rec["status"] == "done" and rec["rounds"], rec
    first = rec["rounds"][0]
    assert first["stratum"] == weak["label"] and first["flow"] == 1
    assert first["n_effective_before"] == pytest.approx(before[weak["label"]])
    assert first["n_added"] > 0 and first["n_effective_after"] > first["n_effective_before"]
    assert rec["flows"] == [0] and finals[0] is not refined and len(finals[0]) > len(refined)
    # within the time left (one refinement level of slack), and it is what the record says
    assert spent <= available + 3.0, (spent, rec)
    assert rec["seconds"] <= spent
    # a rerun whose refinements were resumed takes the merged population from the checkpoint
    t1 = time.perf_counter()
    again, rec2 = leftover_stage(*args, clock, resumable=True)
    assert rec2["resumed"] and time.perf_counter() - t1 < 2.0
    assert len(again[0]) == len(finals[0])
    assert np.allclose(again[0].log_weights, finals[0].log_weights)
    # no time left: nothing spent, nothing changed
    none, rec3 = leftover_stage(
        [gen],
        [drawn],
        [refined],
        config,
        time.perf_counter() + 1.0,
        eval_s,
        tmp_path,
        Stages(tmp_path),
        "other",
        clock,
        resumable=False,
    )
    assert rec3["status"] == "no time left" and none[0] is refined
    # and a rerun resumes that too instead of spending its own budget on the strata
    again, rec4 = leftover_stage(
        [gen],
        [drawn],
        [refined],
        config,
        time.perf_counter() + 60.0,
        eval_s,
        tmp_path,
        Stages(tmp_path),
        "other",
        clock,
        resumable=True,
    )
    assert rec4["resumed"] and rec4["status"] == "no time left" and again[0] is refined
