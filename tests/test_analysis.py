"""Reweighting / free-energy estimators, Samples files, clipping and dihedral CVs."""

from __future__ import annotations

import math

import mdtraj
import numpy as np
import pytest
import torch

import boltzgen as bg
from boltzgen.analysis import (
    free_energy_difference,
    free_energy_surface,
    in_state,
    kish_ess,
    log_mean_exp,
    log_partition,
    reweighted_mean,
    state_free_energies,
)
from boltzgen.errors import InputError, ShapeError
from boltzgen.samples import Samples, clip_log_weights


def test_ess_uniform_and_one_hot():
    assert kish_ess(np.zeros(100)) == pytest.approx(1.0)
    assert kish_ess(np.full(7, 3.3)) == pytest.approx(1.0)
    one_hot = np.full(50, -np.inf)
    one_hot[17] = 0.0
    assert kish_ess(one_hot) == pytest.approx(1 / 50)
    # two equal weights out of 10 -> n_eff 2
    lw = np.full(10, -np.inf)
    lw[[1, 5]] = 4.0
    assert kish_ess(lw) == pytest.approx(0.2)


def test_bad_log_weights_rejected():
    with pytest.raises(InputError):
        kish_ess(np.array([0.0, np.nan]))
    with pytest.raises(InputError):
        kish_ess(np.array([0.0, np.inf]))
    with pytest.raises(InputError):
        kish_ess(np.full(3, -np.inf))
    with pytest.raises(ShapeError):
        kish_ess(np.zeros((2, 2)))


def test_log_mean_exp_and_log_partition():
    rng = np.random.default_rng(0)
    a = rng.normal(size=1000)
    assert log_mean_exp(a) == pytest.approx(np.log(np.mean(np.exp(a))))
    assert log_mean_exp(a + 1000.0) == pytest.approx(np.log(np.mean(np.exp(a))) + 1000.0)
    # importance sampling of Z = int exp(-x^2/2) dx = sqrt(2 pi) from q = N(0, 2^2)
    n = 20000
    x = rng.normal(scale=2.0, size=n)
    log_q = -0.5 * (x / 2.0) ** 2 - np.log(2.0 * np.sqrt(2 * np.pi))
    logz, err = log_partition(-0.5 * x**2 - log_q)
    assert 0 < err < 0.05
    assert abs(logz - 0.5 * np.log(2 * np.pi)) < 4 * err


def test_reweighted_mean_recovers_target_mean_with_error():
    # samples from N(0,1) reweighted to N(1,1): log w = x - 1/2
    rng = np.random.default_rng(1)
    x = rng.normal(size=20000)
    mean, err = reweighted_mean(x, x - 0.5, n_bootstrap=100, seed=0)
    assert 0 < err < 0.05
    assert abs(mean - 1.0) < 4 * err
    # vector observables keep their shape
    m2, e2 = reweighted_mean(np.stack([x, x**2], axis=1), x - 0.5, n_bootstrap=20)
    assert m2.shape == (2,) and e2.shape == (2,)
    assert m2[0] == pytest.approx(mean)


def _two_state_sample(n: int, p_a: float, rng: np.random.Generator) -> np.ndarray:
    """Angles: state A (0, pi) with probability p_a, else B (-pi, 0); uniform within."""
    in_a = rng.random(n) < p_a
    return np.where(in_a, rng.uniform(0, np.pi, n), rng.uniform(-np.pi, 0, n))


def test_free_energy_difference_known_mixture():
    rng = np.random.default_rng(2)
    p_a = 0.03
    v = _two_state_sample(40000, p_a, rng)
    df, err = free_energy_difference(v, cv=v, state_a=(0.0, 3.1416), state_b=(-3.1416, 0.0))
    exact = -np.log(p_a / (1 - p_a))
    assert 0 < err < 0.1
    assert abs(df - exact) < 4 * err
    # and the sign convention: swapping the states flips dF
    df2, _ = free_energy_difference(v, cv=v, state_a=(-3.1416, 0.0), state_b=(0.0, 3.1416))
    assert df2 == pytest.approx(-df)


def test_free_energy_difference_by_reweighting_uniform_sample():
    # uniform angles reweighted with log w = -beta*U where U = c for phi > 0: dF = c
    rng = np.random.default_rng(3)
    v = rng.uniform(-np.pi, np.pi, 30000)
    c = 2.5
    lw = np.where(v > 0, -c, 0.0)
    s = Samples(
        positions=np.zeros((len(v), 1, 3)),
        log_q=np.zeros(len(v)),
        reduced_energy=-lw,
    )
    df, err = free_energy_difference(s, cv=v, state_a=(0.0, np.pi), state_b=(-np.pi, 0.0))
    assert abs(df - c) < 4 * err
    assert err < 0.1


def test_bootstrap_error_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(4)
    errs = []
    for n in (2000, 32000):
        v = _two_state_sample(n, 0.2, rng)
        errs.append(free_energy_difference(v, v, (0, np.pi), (-np.pi, 0), n_bootstrap=300)[1])
    ratio = errs[0] / errs[1]
    assert 3.0 < ratio < 5.3  # sqrt(16) = 4


def test_block_bootstrap_sees_correlation():
    # each value repeated 50 times: iid bootstrap underestimates, blocks of 50 do not
    rng = np.random.default_rng(5)
    v = np.repeat(_two_state_sample(400, 0.3, rng), 50)
    _, e_iid = free_energy_difference(v, v, (0, np.pi), (-np.pi, 0))
    _, e_blk = free_energy_difference(v, v, (0, np.pi), (-np.pi, 0), block_size=50)
    assert e_blk > 4 * e_iid


def test_state_free_energies_recover_known_populations_with_honest_errors():
    # four states drawn i.i.d. from known populations, half of them through importance weights
    # (a uniform proposal reweighted to the target): -log P within 3.5 errors, errors near the
    # binomial sqrt((1 - p) / (n p)), the populations summing to 1
    rng = np.random.default_rng(11)
    p = np.array([0.6, 0.25, 0.1, 0.05])
    names = np.array(["++", "+-", "-+", "--"])
    n = 40_000
    lab = names[rng.choice(4, n, p=p)]
    out = state_free_energies(lab, n_bootstrap=200)
    assert sum(r["population"] for r in out.values()) == pytest.approx(1.0)
    for k, pk in zip(names, p, strict=True):
        r = out[k]
        assert abs(r["free_energy_kT"] + math.log(pk)) < 3.5 * r["err_kT"]
        assert r["err_kT"] == pytest.approx(math.sqrt((1 - pk) / (n * pk)), rel=0.25)
    idx = rng.integers(0, 4, n)  # uniform proposal q = 1/4: log w = log(p / q)
    rew = state_free_energies(names[idx], np.log(p[idx] * 4), n_bootstrap=200)
    for k, pk in zip(names, p, strict=True):
        assert abs(rew[k]["free_energy_kT"] + math.log(pk)) < 3.5 * rew[k]["err_kT"]
    # correlated frames: blocks widen the error; a state absent in some replicate: inf
    rep = np.repeat(lab[:800], 50)
    iid = state_free_energies(rep, n_bootstrap=100)["--"]["err_kT"]
    assert state_free_energies(rep, n_bootstrap=100, block_size=50)["--"]["err_kT"] > 4 * iid
    rare = np.array(["+"] * 999 + ["-"])
    assert state_free_energies(rare, n_bootstrap=200)["-"]["err_kT"] == math.inf
    assert "-" not in state_free_energies(rare, np.r_[np.zeros(999), -np.inf], n_bootstrap=0)
    with pytest.raises(ShapeError, match="labels"):
        state_free_energies(np.zeros((3, 2)))


def test_empty_state_gives_infinite_df():
    v = np.linspace(-3, -0.1, 100)
    df, err = free_energy_difference(v, v, (0, np.pi), (-np.pi, 0))
    assert df == np.inf and err == np.inf


def test_periodic_intervals():
    v = np.array([-3.1, -2.6, -1.0, 0.0, 1.0, 2.6, 3.1, np.pi])
    assert in_state(v, (2.5, -2.5)).tolist() == [1, 1, 0, 0, 0, 1, 1, 1]
    assert in_state(v, (0.0, 3.1416)).tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert in_state(v, (-3.1416, 0.0)).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    # a region across the seam against the rest; CV values outside (-pi, pi] are wrapped
    rng = np.random.default_rng(6)
    u = rng.uniform(-np.pi, np.pi, 20000)
    df, err = free_energy_difference(
        u + 2 * np.pi, u + 2 * np.pi, (2.0, -2.0), (-2.0, 2.0), period=2 * np.pi
    )
    exact = -np.log((2 * np.pi - 4.0) / 4.0)
    assert abs(df - exact) < 4 * err
    with pytest.raises(InputError, match="overlap"):
        free_energy_difference(u, u, (0.0, 2.0), (1.0, 3.0))


def test_free_energy_surface_1d_known_density():
    # p(x) propto exp(-x^2/2): F(x) = x^2/2 + const
    rng = np.random.default_rng(7)
    x = rng.normal(size=200000)
    centers, f, err = free_energy_surface(x, cvs=x, bins=20, range=(-2.0, 2.0), n_bootstrap=30)
    assert centers.shape == f.shape == err.shape == (20,)
    assert np.nanmin(f) == 0.0
    exact = 0.5 * centers**2
    exact -= exact.min()
    # bin averaging shifts the curve a little; compare after removing the mean offset
    d = f - exact
    assert np.all(np.abs(d - d.mean()) < 0.05)
    assert np.all(err > 0) and np.all(err < 0.1)


def test_free_energy_surface_2d_empty_bins_nan_and_weights_used():
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1, 5000)
    y = rng.uniform(0, 1, 5000)
    (cx, cy), f, err = free_energy_surface(
        x, cvs=(x, y), bins=4, range=((0, 2), (0, 1)), n_bootstrap=10
    )
    assert cx.shape == (4,) and cy.shape == (4,) and f.shape == (4, 4)
    assert np.isnan(f[2:]).all() and np.isfinite(f[:2]).all()
    # reweighting: weight exp(-3) on x > 0.5 gives F difference 3 between columns
    lw = np.where(x > 0.5, -3.0, 0.0)
    _, f1, _ = free_energy_surface(x, cvs=x, bins=2, range=(0, 1), log_weights=lw, n_bootstrap=0)
    assert f1[1] - f1[0] == pytest.approx(3.0, abs=0.15)


def test_samples_weights_and_inf_energy():
    s = Samples(
        positions=np.zeros((4, 2, 3)),
        log_q=np.array([0.0, 0.0, 1.0, 0.0]),
        reduced_energy=np.array([1.0, np.inf, 0.0, 2.0]),
    )
    assert s.positions.dtype == np.float32
    np.testing.assert_allclose(s.log_weights, [-1.0, -np.inf, -1.0, -2.0])
    assert s.normalized_weights.sum() == pytest.approx(1.0)
    assert s.normalized_weights[1] == 0.0
    assert s.n_eff == pytest.approx(s.ess * 4)
    # Kish: weights e^-1, 0, e^-1, e^-2 -> (sum w)^2 / (n sum w^2) over all n = 4 draws
    a, b = math.exp(-1.0), math.exp(-2.0)
    assert s.ess == pytest.approx((2 * a + b) ** 2 / (4 * (2 * a * a + b * b)), rel=1e-12)


def _adp_samples(adp_pdb, n=30, seed=0) -> Samples:
    traj = mdtraj.load(str(adp_pdb))
    rng = np.random.default_rng(seed)
    x = traj.xyz + 0.01 * rng.normal(size=(n, traj.n_atoms, 3))
    return Samples(
        positions=x,
        log_q=rng.normal(size=n),
        reduced_energy=np.where(np.arange(n) == 3, np.inf, rng.normal(size=n)),
        topology=traj.topology,
        extra={"tag": np.arange(n)},
    )


def test_samples_save_load_round_trip(tmp_path, adp_pdb):
    s = _adp_samples(adp_pdb)
    path = s.save(tmp_path / "s.h5")
    t = mdtraj.load(str(path))
    assert t.n_frames == len(s) and t.n_atoms == 22
    np.testing.assert_allclose(t.xyz, s.positions, atol=1e-6)
    back = Samples.load(path)
    np.testing.assert_array_equal(back.log_weights, s.log_weights)
    np.testing.assert_array_equal(back.log_q, s.log_q)
    np.testing.assert_array_equal(back.reduced_energy, s.reduced_energy)
    np.testing.assert_array_equal(back.extra["tag"], np.arange(len(s)))
    assert back.ess == pytest.approx(s.ess)
    assert back.to_mdtraj().topology == s.topology
    # an ordinary trajectory file is not a samples file
    t.save_hdf5(str(tmp_path / "md.h5"))
    with pytest.raises(bg.errors.StructureError, match="from_trajectory"):
        Samples.load(tmp_path / "md.h5")
    md = Samples.from_trajectory(t)
    assert md.ess == 1.0 and np.isnan(md.log_q).all()


def test_samples_concatenate_and_index(adp_pdb):
    s = _adp_samples(adp_pdb, n=10)
    both = Samples.concatenate([s, s[2:5]])
    assert len(both) == 13
    np.testing.assert_array_equal(both.extra["tag"][10:], [2, 3, 4])
    assert np.isneginf(both.log_weights[11])


def test_clipping_is_opt_in_and_reported(adp_pdb):
    s = _adp_samples(adp_pdb, n=200, seed=3)
    s.log_weights[7] = 50.0  # one dominating weight
    before = s.log_weights.copy()
    clipped, report = clip_log_weights(s, quantile=0.99)
    np.testing.assert_array_equal(s.log_weights, before)  # input untouched
    assert report["n_clipped"] == int(np.sum(before[np.isfinite(before)] > report["threshold"]))
    assert report["n_clipped"] >= 1
    assert clipped.log_weights.max() == pytest.approx(report["threshold"])
    assert report["ess_after"] > report["ess_before"]
    with pytest.raises(InputError):
        clip_log_weights(s, quantile=1.5)


def test_dihedral_cv_matches_mdtraj(adp_pdb):
    traj = mdtraj.load(str(adp_pdb))
    rng = np.random.default_rng(9)
    x = (traj.xyz + 0.05 * rng.normal(size=(64, traj.n_atoms, 3))).astype(np.float32)
    t = mdtraj.Trajectory(x, traj.topology)
    for name, fn in (("phi", mdtraj.compute_phi), ("psi", mdtraj.compute_psi)):
        cv = bg.cv.dihedral(traj.topology, name)
        ref = fn(t)[1][:, 0]
        np.testing.assert_allclose(cv(x), ref, atol=1e-4)
        np.testing.assert_allclose(cv(t), ref, atol=1e-4)
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        vt = cv(xt)
        np.testing.assert_allclose(vt.detach().numpy(), ref, atol=1e-4)
        vt.sum().backward()
        assert torch.isfinite(xt.grad).all()
        assert cv.period == pytest.approx(2 * math.pi)
    assert bg.cv.dihedral(traj.topology, (4, 6, 8, 14))(x).shape == (64,)
    with pytest.raises(InputError):
        bg.cv.dihedral(traj.topology, "chi1")  # alanine has no chi1
    with pytest.raises(InputError):
        bg.cv.dihedral(traj.topology, "kappa")


def test_free_energy_difference_on_samples_with_dihedral_cv(adp_pdb):
    s = _adp_samples(adp_pdb, n=40)
    phi = bg.cv.dihedral(s.topology, "phi")
    values = phi(s.positions)
    df_callable = bg.free_energy_difference(
        s, cv=phi, state_a=(-3.1416, -1.0), state_b=(-1.0, 3.1416), n_bootstrap=0
    )
    df_array = free_energy_difference(
        s, cv=values, state_a=(-3.1416, -1.0), state_b=(-1.0, 3.1416), n_bootstrap=0
    )
    assert df_callable[0] == df_array[0]
