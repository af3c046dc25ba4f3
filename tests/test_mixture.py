"""Several flows as one proposal (boltzgen.generator.mixture): the mixture's density, its draws'
weights, and the unbiasedness of the deterministic-mixture estimator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import boltzgen as bg
from boltzgen.errors import InputError
from boltzgen.generator.mixture import FlowMixture, combine_draws, sample_mixture

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def adp():
    return bg.System.alanine_dipeptide()


@pytest.fixture(scope="module")
def frames(adp):
    md = bg.load_md(DATA / "adp-vacuum-remd.h5")
    return md.trajectory.xyz[::20]


def _flow(adp, frames, seed):
    """A small flow whose weights are jittered by ``seed`` (a new flow is the identity map
    whatever its seed, so two would be the same)."""
    g = bg.BoltzmannGenerator.build(
        adp, data=frames, n_layers=2, hidden=(16,), n_components=3, dtype="float64", seed=seed
    )
    noise = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for p in g.flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=noise, dtype=p.dtype))
    return g


@pytest.fixture(scope="module")
def flows(adp, frames):
    return [_flow(adp, frames, 0), _flow(adp, frames, 1)]


class _Stub:
    """Enough of a generator for the mixture's bookkeeping."""

    class system:  # noqa: N801 (a generator's attribute)
        n_atoms = 22


def _lp(g, x):
    return g.log_prob(torch.as_tensor(x, dtype=torch.float64)).detach().numpy()


def test_mixture_log_prob_is_the_mean_density(flows, frames):
    x = frames[:50]
    a, b = _lp(flows[0], x), _lp(flows[1], x)
    assert not np.allclose(a, b)  # two different flows
    want = np.log(0.5 * np.exp(a) + 0.5 * np.exp(b))
    np.testing.assert_allclose(_lp(FlowMixture(flows), x), want, rtol=1e-10)
    # one flow twice is that flow
    np.testing.assert_allclose(_lp(FlowMixture([flows[0]] * 2), x), a, rtol=1e-10)
    # weights are normalised
    three_to_one = np.log(0.75 * np.exp(a) + 0.25 * np.exp(b))
    np.testing.assert_allclose(_lp(FlowMixture(flows, [3, 1]), x), three_to_one, rtol=1e-10)


def test_mixture_counts_are_unbiased():
    """Systematic sampling of the remainder: every count is floor(n a_k) or one more, they
    add up to n, and their mean is n a_k."""
    m = FlowMixture([_Stub(), _Stub(), _Stub()], [0.5, 0.3, 0.2])
    torch.manual_seed(0)
    draws = np.array([m.counts(7) for _ in range(4000)])
    assert (draws.sum(axis=1) == 7).all()
    assert set(draws[:, 0]) <= {3, 4} and set(draws[:, 2]) <= {1, 2}
    np.testing.assert_allclose(draws.mean(axis=0), [3.5, 2.1, 1.4], atol=0.03)
    assert FlowMixture([_Stub(), _Stub()]).counts(40) == [20, 20]


def test_mixture_draws_split_over_flows_with_bounded_weights(flows):
    torch.manual_seed(0)
    s = sample_mixture(flows, 41)
    assert sorted(np.bincount(s.extra["component"]).tolist()) == [20, 21]
    fin = np.isfinite(s.reduced_energy)
    assert fin.mean() > 0.5
    np.testing.assert_allclose(
        s.log_weights[fin], -s.reduced_energy[fin] - s.log_q[fin], rtol=1e-12
    )
    # q_mix >= q_k / K for the flow k a draw came from: its weight is at most K times its own
    for k, g in enumerate(flows):
        own = s.extra["component"] == k
        assert np.all(s.log_q[own] >= _lp(g, s.positions[own]) - math.log(2) - 1e-9)


def test_mixture_weights_are_unbiased(flows):
    """With the target p = q_0 itself (normalised, u = -log q_0), the mixture's mean weight
    E[q_0 / q_mix] is 1 exactly; a missing log K, or weights against each draw's own flow,
    would not estimate the target's normalisation from both flows' draws."""
    target = flows[0]
    gens = list(flows)
    for g in gens:
        g.energy = lambda x: -target.log_prob(x).detach().double()
    torch.manual_seed(1)
    s = sample_mixture(gens, 4001)
    w = np.exp(s.log_weights)
    assert np.isfinite(w).all()
    assert w.max() <= 2.0 * (1 + 1e-4)  # q_0 / q_mix <= K (float32 positions)
    assert w.mean() == pytest.approx(1.0, abs=0.06)
    # the second flow's draws alone are weighted q_0 / q_mix too: their mean is not 1
    assert abs(w[s.extra["component"] == 1].mean() - 1.0) > 0.02
    for g in gens:
        g.energy = None


def test_draws_already_made_are_weighed_by_their_counts(flows):
    torch.manual_seed(3)
    parts = [flows[0].sample(30), flows[1].sample(10)]
    s = combine_draws(flows, parts)
    assert np.bincount(s.extra["component"]).tolist() == [30, 10]
    a = _lp(flows[0], s.positions)
    b = _lp(flows[1], s.positions)
    np.testing.assert_allclose(s.log_q, np.log(0.75 * np.exp(a) + 0.25 * np.exp(b)), rtol=1e-9)
    fin = np.isfinite(s.reduced_energy)
    np.testing.assert_allclose(s.log_weights[fin], -s.reduced_energy[fin] - s.log_q[fin])


def test_mixture_bad_input(flows):
    with pytest.raises(InputError, match="at least one"):
        sample_mixture([], 10)
    with pytest.raises(InputError, match="must be >= 1"):
        sample_mixture(flows, 0)
    with pytest.raises(InputError, match="2 positive numbers"):
        FlowMixture(flows, [1.0, -1.0])
    with pytest.raises(InputError, match="1 sample sets for 2 flows"):
        FlowMixture(flows).weigh([None])
    other = bg.BoltzmannGenerator.build(
        bg.System.from_pdb(DATA / "peptides" / "ace-pro-nme.pdb"),
        n_layers=1,
        hidden=(8,),
        n_components=2,
    )
    with pytest.raises(InputError, match="different molecules"):
        sample_mixture([flows[0], other], 10)


def test_mixture_refines_like_a_generator(flows):
    """The mixture is a proposal refinement can take (its log q, energy and draws)."""
    torch.manual_seed(2)
    r = FlowMixture(flows).sample(64, refine={"n_steps": 1, "max_levels": 4, "seed": 0})
    assert len(r) == 64 and r.n_energy_evals > 64
    assert np.isfinite(r.log_z)
