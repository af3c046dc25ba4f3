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
from boltzgen.generator.mixture import FlowMixture, sample_mixture

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


def test_mixture_draws_split_over_flows_with_bounded_weights(flows):
    torch.manual_seed(0)
    s = sample_mixture(flows, 41)
    assert np.bincount(s.extra["component"]).tolist() == [21, 20]
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
    s = sample_mixture(gens, 4000)
    w = np.exp(s.log_weights)
    assert np.isfinite(w).all()
    assert w.max() <= 2.0 + 1e-6  # q_0 / q_mix <= K
    assert w.mean() == pytest.approx(1.0, abs=0.06)
    # the second flow's draws alone are weighted q_0 / q_mix too: their mean is not 1
    assert abs(w[s.extra["component"] == 1].mean() - 1.0) > 0.02
    for g in gens:
        g.energy = None


def test_mixture_bad_input(flows):
    with pytest.raises(InputError, match="at least one"):
        sample_mixture([], 10)
    with pytest.raises(InputError, match="at least one sample per flow"):
        sample_mixture(flows, 1)
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
