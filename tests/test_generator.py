"""Boltzmann generator: density bookkeeping, training losses, checkpoints, flow-driven MD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import boltzgen as bg
from boltzgen.generator.flow_md import flow_md


@pytest.fixture(scope="module")
def adp():
    return bg.System.alanine_dipeptide()


@pytest.fixture(scope="module")
def md_data(adp, tmp_path_factory):
    out = tmp_path_factory.mktemp("md") / "md.h5"
    bg.simulate(adp, n_steps=3000, timestep=0.001, report_interval=10, out=out, seed=1)
    return bg.load_md(out)


@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_sample_log_q_matches_log_prob(adp, md_data, kind):
    gen = bg.BoltzmannGenerator.build(
        adp, flow=kind, data=md_data, n_layers=2, hidden=(16,), n_components=3, dtype="float64"
    )
    s = gen.sample(64)
    assert s.positions.shape == (64, adp.n_atoms, 3)
    # the density of a sample, recomputed from its positions, is the one reported at sampling
    lq = gen.log_prob(torch.as_tensor(s.positions, dtype=torch.float64)).detach().numpy()
    ok = np.isfinite(lq)
    assert ok.mean() > 0.9
    np.testing.assert_allclose(lq[ok], s.log_q[ok], atol=2e-2)
    # log-weights are -u - log q, energies from OpenMM
    direct = gen.energy(torch.as_tensor(s.positions, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(s.reduced_energy, direct, rtol=1e-3)
    fin = np.isfinite(s.reduced_energy)
    np.testing.assert_allclose(s.log_weights[fin], -s.reduced_energy[fin] - s.log_q[fin])
    # the ESS is Kish's of these log-weights (recomputed here), not just some number in (0, 1]
    w = np.exp(s.log_weights - s.log_weights[fin].max())
    assert s.ess == pytest.approx(w.sum() ** 2 / (len(w) * (w**2).sum()), rel=1e-9)


def test_nll_training_improves_and_resumes(adp, md_data, tmp_path):
    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=2, hidden=(32,), n_components=4)
    x = torch.as_tensor(md_data.trajectory.xyz)
    before = float(-gen.log_prob(x).mean())
    events = []
    ckpt = tmp_path / "ckpt.pt"
    hist = gen.fit(
        md_data,
        loss="nll",
        epochs=3,
        batch_size=64,
        callbacks=[events.append],
        checkpoint=ckpt,
        patience=100,
    )
    after = float(-gen.log_prob(x).mean())
    assert after < before - 5, (before, after)
    assert len(hist["val_nll"]) == 3 and ckpt.exists()
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2, 3]
    assert events[-1]["event"] == "done"
    # resuming with more epochs continues from epoch 3
    gen2 = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=2, hidden=(32,), n_components=4)
    seen = []
    hist2 = gen2.fit(
        md_data,
        loss="nll",
        epochs=4,
        batch_size=64,
        callbacks=[seen.append],
        checkpoint=ckpt,
        patience=100,
    )
    assert [e["epoch"] for e in seen if e["event"] == "epoch"] == [4]
    assert len(hist2["val_nll"]) == 4


@pytest.mark.parametrize("loss", ["kl", "mixed", "force", "anneal"])
def test_other_losses_run_and_are_finite(adp, md_data, loss):
    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=2, hidden=(16,), n_components=3)
    hist = gen.fit(
        md_data,
        loss=loss,
        epochs=1,
        max_steps=3,
        batch_size=32,
        kl_batch_size=16,
        anneal_samples=64,
        guard_samples=200,
        weights={"nll": 1.0, "kl": 0.1, "force": 0.01},
    )
    assert math.isfinite(hist["train_loss"][-1])
    if loss in ("kl", "mixed", "anneal"):  # energy-based: the phi-sign state guard ran
        guard = hist["state_guard"][-1]
        assert set(guard["states"]) <= {"+", "-"} and "-" in guard["states"]
        assert guard["states"]["-"]["data"] > 0.5  # MD at 300 K sits mostly at phi < 0
    else:
        assert "state_guard" not in hist


def test_force_matching_needs_forces(adp, md_data):
    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=1, hidden=(8,), n_components=2)
    with pytest.raises(bg.InputError, match="forces"):
        gen.fit(md_data.trajectory, loss="force", epochs=1)


def test_save_load_round_trip(adp, md_data, tmp_path):
    gen = bg.BoltzmannGenerator.build(adp, flow="spline", data=md_data, n_layers=2, hidden=(16,))
    x = torch.as_tensor(md_data.trajectory.xyz[:20])
    path = gen.save(tmp_path / "m.pt")
    again = bg.BoltzmannGenerator.load(path)
    torch.testing.assert_close(gen.log_prob(x), again.log_prob(x))
    assert again.system.n_atoms == adp.n_atoms


def test_logistic_tails_keep_stretched_bonds_in_the_support(adp, md_data, tmp_path):
    hard = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=1, hidden=(8,), n_components=2)
    soft = bg.BoltzmannGenerator.build(
        adp, data=md_data, n_layers=1, hidden=(8,), n_components=2, tails="logistic"
    )
    assert soft.coords.box.soft.sum() > 0 and not hard.coords.box.soft.any()
    x = torch.as_tensor(md_data.trajectory.xyz[:4].copy())
    a, b = (int(v) for v in soft.coords.ic.zmatrix[1, :2])
    x[0, a] = x[0, b] + 1.5 * (x[0, a] - x[0, b])  # a bond 50 % past its equilibrium length
    assert hard.log_prob(x)[0] == -math.inf
    lq = soft.log_prob(x)
    assert torch.isfinite(lq).all() and lq[0] < lq[1:].min()
    assert torch.isfinite(soft.force(x)[1]).all()
    again = bg.BoltzmannGenerator.load(soft.save(tmp_path / "soft.pt"))
    assert again.config["tails"] == "logistic"
    torch.testing.assert_close(again.log_prob(x), lq)


def test_flow_md_nve_conserves_energy(adp, md_data):
    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=2, hidden=(16,), n_components=3)
    gen.fit(md_data, loss="nll", epochs=10, batch_size=64, patience=100)
    traj = flow_md(
        gen,
        md_data.trajectory.xyz[0],
        n_steps=200,
        timestep=0.0005,
        report_interval=10,
        temperature=100.0,
    )
    drift = traj.energy_drift()
    assert np.isfinite(traj.potential_energy).all()
    # Smooth-NF: a 5 ps NVE run stays within about +-5 kJ/mol; this short run must do better
    assert drift["max_abs_deviation"] < 1.0, drift
    assert drift["fluctuation_ratio"] < 0.05, drift


def test_reverse_kl_from_scratch_without_data(adp):
    """No MD at all: force-field bounds and energy-based training."""
    gen = bg.BoltzmannGenerator.build(adp, n_layers=1, hidden=(8,), n_components=2)
    assert gen.config["bounds"] == "forcefield"
    hist = gen.fit(None, loss="kl", epochs=2, kl_steps_per_epoch=2, kl_batch_size=16)
    assert len(hist["train_loss"]) == 2 and math.isfinite(hist["train_loss"][-1])
    with pytest.raises(bg.InputError, match="needs training data"):
        gen.fit(None, loss="nll")


def test_state_weights_give_each_state_its_share():
    phi = np.array([-2.0, -1.5, -1.0, -0.5, 1.0, 2.9, -3.1, 0.5])
    w = bg.state_weights(phi, [(0.0, math.pi), (3.0, -3.0)], [0.3, 0.1])
    assert w.shape == phi.shape and np.isclose(w.mean(), 1.0)
    share = w / w.sum()
    assert np.isclose(share[[4, 5, 7]].sum(), 0.3)  # phi in [0, pi)
    assert np.isclose(share[6], 0.1)  # the wrapped interval around +-pi
    assert np.allclose(share[:4], 0.6 / 4)  # the rest, uniform within
    with pytest.raises(bg.InputError, match="no frame lies in state"):
        bg.state_weights(phi, [(0.6, 0.9)], [0.1])
    with pytest.raises(bg.InputError, match="overlaps"):
        bg.state_weights(phi, [(0.0, math.pi), (0.4, 1.5)], [0.1, 0.1])
    with pytest.raises(bg.InputError, match="shares"):
        bg.state_weights(phi, [(0.0, math.pi)], [1.0])
    with pytest.raises(bg.InputError, match="2 shares"):
        bg.state_weights(phi, [(0.0, math.pi)], [0.1, 0.2])
    with pytest.raises(bg.ShapeError):
        bg.state_weights(phi[None], [(0.0, math.pi)], [0.1])


def test_training_data_weights_are_checked_and_follow_the_split():
    x = np.random.default_rng(0).normal(size=(10, 3, 3))
    with pytest.raises(bg.ShapeError, match="one per frame"):
        bg.TrainingData(x, weights=np.ones(9))
    with pytest.raises(bg.InputError, match=">= 0"):
        bg.TrainingData(x, weights=-np.ones(10))
    with pytest.raises(bg.InputError, match="all zero"):
        bg.TrainingData(x, weights=np.zeros(10))
    w = np.arange(10.0)
    train, val = bg.TrainingData(x, weights=w).split(0.3, seed=0)
    for part in (train, val):
        # each frame keeps its own weight: frame i has x[i, 0, 0] and weight i
        idx = [int(np.flatnonzero(x[:, 0, 0] == row[0, 0])[0]) for row in part.positions]
        np.testing.assert_array_equal(part.weights, w[idx])


def test_weighted_epochs_draw_in_proportion_and_skip_zero_weights():
    from boltzgen.generator.training import epoch_order

    rng = np.random.default_rng(0)
    assert sorted(epoch_order(rng, 50)) == list(range(50))  # unweighted: a permutation
    p = np.array([0.0, 0.1, 0.2, 0.7])
    counts = np.bincount(np.concatenate([epoch_order(rng, 4, p) for _ in range(5000)]), minlength=4)
    assert counts[0] == 0
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.01)


def test_weighted_fit_and_weighted_validation(adp, md_data):
    from boltzgen.generator.training import validation_nll

    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=1, hidden=(8,), n_components=2)
    x = md_data.trajectory.xyz
    w = np.r_[np.ones(len(x) // 2), np.zeros(len(x) - len(x) // 2)]
    hist = gen.fit(bg.TrainingData(x, weights=w), epochs=2, batch_size=64, patience=100)
    assert all(math.isfinite(v) for v in hist["val_nll"])
    xt = torch.as_tensor(x)
    nll = -gen.log_prob(xt).detach().double().numpy()
    assert np.isclose(validation_nll(gen, xt, weights=w), nll[: len(x) // 2].mean())
    assert np.isclose(validation_nll(gen, xt), nll.mean())


def test_training_data_join_keeps_forces_only_when_all_have_them():
    rng = np.random.default_rng(1)
    a = bg.TrainingData(rng.normal(size=(4, 3, 3)), rng.normal(size=(4, 3, 3)))
    b = bg.TrainingData(rng.normal(size=(3, 3, 3)), weights=np.full(3, 2.0))
    both = bg.TrainingData.join([a, a])
    assert len(both) == 8 and both.forces is not None and both.weights is None
    mixed = bg.TrainingData.join([a, b])
    assert mixed.forces is None
    np.testing.assert_array_equal(mixed.weights, [1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(mixed.positions[4:], b.positions)
    with pytest.raises(bg.ShapeError, match="atom counts"):
        bg.TrainingData.join([a, bg.TrainingData(rng.normal(size=(3, 5, 3)))])


def test_flow_md_reports_where_it_leaves_the_support(adp, md_data):
    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=1, hidden=(8,), n_components=2)
    x0 = md_data.trajectory.xyz[0]
    with pytest.raises(bg.InputError, match="start configuration"):
        flow_md(gen, x0 * 1.5, n_steps=10, timestep=0.001)
    # hard bounds and a 20 fs step at 3000 K: the run leaves the support within a few steps
    with pytest.raises(bg.FlowMDError) as info:
        flow_md(gen, x0, n_steps=1000, timestep=0.02, temperature=3000.0)
    assert 1 <= info.value.step < 1000 and f"step {info.value.step}" in str(info.value)


def test_cosine_schedule_follows_steps_or_time_whichever_ends_first():
    from boltzgen.generator.config import TrainConfig
    from boltzgen.generator.training import cosine_lr

    by_steps = TrainConfig(lr=1e-3, epochs=10, lr_schedule="cosine")
    assert cosine_lr(by_steps, 0, 100, 0.0) == pytest.approx(1e-3)
    assert cosine_lr(by_steps, 500, 100, 1e6) == pytest.approx(5e-4)  # no time limit
    assert cosine_lr(by_steps, 1000, 100, 0.0) == pytest.approx(0.0, abs=1e-12)
    by_time = TrainConfig(lr=1e-3, epochs=100_000, lr_schedule="cosine", time_limit=60.0)
    assert cosine_lr(by_time, 10, 100, 30.0) == pytest.approx(5e-4, rel=1e-6)
    assert cosine_lr(by_time, 10, 100, 90.0) == 0.0  # past the limit: stays at zero
    capped = TrainConfig(lr=1e-3, epochs=100_000, max_steps=200, lr_schedule="cosine")
    assert cosine_lr(capped, 100, 100, 0.0) == pytest.approx(5e-4)


def test_time_limited_cosine_run_ends_annealed(adp, md_data):
    gen = bg.BoltzmannGenerator.build(adp, data=md_data, n_layers=2, hidden=(16,))
    h = gen.fit(
        md_data,
        epochs=100_000,
        batch_size=64,
        lr=1e-3,
        lr_schedule="cosine",
        time_limit=3.0,
        patience=100_000,  # 300 frames overfit fast: only the time may end this run
    )
    assert h["stop_reason"] == ["time_limit"]
    assert h["lr"][0] < 1e-3  # it decays within the first epoch already
    assert h["lr"][-1] < 0.1 * 1e-3  # the last step ran near the end of the time
    assert all(a >= b for a, b in zip(h["lr"], h["lr"][1:], strict=False))
