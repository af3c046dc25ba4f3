"""Annealed SMC refinement (boltzgen.refinement): exactness on analytic targets, bookkeeping,
invalid configurations, determinism, and one run with the real OpenMM energy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from boltzgen.analysis import kish_ess, log_mean_exp
from boltzgen.diagnostics import k_hat
from boltzgen.errors import InputError
from boltzgen.refinement import RefinedSamples, SMCResult, refine, systematic_resample
from boltzgen.samples import Samples

# ----------------------------------------------------------------------------- targets
# 2-D asymmetric double well: u = A (x^2 - 1)^2 - C x + y^2 / 2 (barrier ~3 kT).
A, C = 3.0, 1.0
_GRID = np.linspace(-4.0, 4.0, 400_001)
_DX = _GRID[1] - _GRID[0]
_FX = np.exp(-(A * (_GRID**2 - 1) ** 2 - C * _GRID))
LOG_Z_DW = math.log(_FX.sum() * _DX) + 0.5 * math.log(2 * math.pi)
P_RIGHT = float(_FX[_GRID > 0].sum() / _FX.sum())


def u_dw(x: torch.Tensor) -> torch.Tensor:
    return A * (x[:, 0] ** 2 - 1) ** 2 - C * x[:, 0] + 0.5 * x[:, 1] ** 2


def sample_dw(n: int, rng: np.random.Generator) -> np.ndarray:
    """Exact draws of the double well (inverse CDF on a fine grid in x, normal in y)."""
    cdf = np.cumsum(_FX)
    cdf /= cdf[-1]
    x = np.interp(rng.random(n), cdf, _GRID)
    return np.stack([x, rng.normal(size=n)], axis=1)


SCALE = np.array([1.2, 1.5])  # mismatched Gaussian proposal N(0, diag(SCALE^2))


def gauss_log_q(x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(SCALE, dtype=x.dtype)
    return -0.5 * ((x / s) ** 2).sum(1) - float(np.log(SCALE).sum()) - math.log(2 * math.pi)


def gauss_draws(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).normal(size=(n, 2)) * SCALE


class Counting:
    """An energy that counts the configurations it is called on."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, x):
        self.n += len(x)
        return self.fn(x)


# ----------------------------------------------------------------------------- exactness
def test_exact_proposal_is_left_invariant():
    """q = p: every incremental weight is log Z, and the moves must keep p (the double well)."""
    rng = np.random.default_rng(0)
    x0 = sample_dw(2000, rng)

    def log_p(x):
        return -u_dw(x) - LOG_Z_DW

    r = refine(x0, u_dw, log_q=log_p, schedule="linear", n_levels=3, n_steps=4, seed=1)
    assert isinstance(r, SMCResult)
    assert r.log_z == pytest.approx(LOG_Z_DW, abs=1e-9)  # r(x) = log Z for every particle
    assert r.ess == pytest.approx(1.0)
    assert r.history["resampled"] == [0, 0, 0]
    acc = np.array(r.history["acceptance"])
    assert (acc > 0.4).all(), acc
    x = r.positions
    assert np.abs(x - x0).max() > 0.5  # the particles did move
    # still distributed as p: well population and both marginals
    p_hat = float(np.mean(x[:, 0] > 0))
    assert abs(p_hat - P_RIGHT) < 4 * math.sqrt(P_RIGHT * (1 - P_RIGHT) / len(x))
    ref = sample_dw(20000, np.random.default_rng(1))
    assert stats.ks_2samp(x[:, 0], ref[:, 0]).pvalue > 1e-3
    assert stats.kstest(x[:, 1], "norm").pvalue > 1e-3
    # reported energies / log q are those of the final positions
    xt = torch.as_tensor(x)
    np.testing.assert_allclose(r.reduced_energy, u_dw(xt).numpy(), rtol=1e-12)
    np.testing.assert_allclose(r.log_q, log_p(xt).numpy(), rtol=1e-12)


def test_double_well_unbiased_log_z_populations_and_ess():
    """Mismatched Gaussian proposal: log Z and the well population agree with quadrature
    within the reported / seed-to-seed errors; refined ESS far above plain importance sampling."""
    n, seeds = 1000, range(8)
    log_z, err, p_smc, ess_smc, ess_is = [], [], [], [], []
    for seed in seeds:
        x0 = gauss_draws(n, seed)
        r = refine(x0, u_dw, log_q=gauss_log_q, seed=seed)
        assert abs(r.log_z - LOG_Z_DW) < 4 * r.log_z_err + 1e-3, (r.log_z, r.log_z_err)
        log_z.append(r.log_z)
        err.append(r.log_z_err)
        p_smc.append(float(np.sum(r.normalized_weights * (r.positions[:, 0] > 0))))
        ess_smc.append(r.ess)
        lw_is = -u_dw(torch.as_tensor(x0)).numpy() - gauss_log_q(torch.as_tensor(x0)).numpy()
        ess_is.append(kish_ess(lw_is))
        assert r.history["ess_is"] == pytest.approx(ess_is[-1])
        assert r.history["log_z_is"] == pytest.approx(log_mean_exp(lw_is))
        assert r.history["betas"][0] == 0.0 and r.history["betas"][-1] == 1.0
        assert np.all(np.diff(r.history["betas"]) > 0)
    log_z, err, p_smc = np.array(log_z), np.array(err), np.array(p_smc)
    k = len(log_z)
    # unbiased within the seed-to-seed standard error
    assert abs(log_z.mean() - LOG_Z_DW) < 4 * log_z.std(ddof=1) / math.sqrt(k)
    assert abs(p_smc.mean() - P_RIGHT) < 4 * p_smc.std(ddof=1) / math.sqrt(k) + 1e-3
    # the reported error bar is the right size (seed-to-seed spread)
    assert 0.4 < err.mean() / log_z.std(ddof=1) < 2.5, (err.mean(), log_z.std(ddof=1))
    # plain IS from q has ESS ~0.2 here; refinement ends near 1
    assert np.mean(ess_is) < 0.3
    assert np.mean(ess_smc) > 0.8 and np.mean(ess_smc) > 3 * np.mean(ess_is)


def test_gaussian_log_z_and_mean_fixed_schedule_mala():
    """Correlated Gaussian target (closed form Z and mean), geometric schedule, MALA."""
    mu = np.array([0.5, -0.3])
    cov = np.array([[0.5, 0.3], [0.3, 0.8]])
    prec = torch.as_tensor(np.linalg.inv(cov))
    log_z_exact = math.log(2 * math.pi) + 0.5 * math.log(np.linalg.det(cov))

    def u(x):
        d = x - torch.as_tensor(mu, dtype=x.dtype)
        return 0.5 * torch.einsum("bi,ij,bj->b", d, prec, d)

    means, log_z = [], []
    for seed in range(6):
        r = refine(
            gauss_draws(1000, seed),
            u,
            log_q=gauss_log_q,
            schedule="geometric",
            n_levels=6,
            kernel="mala",
            n_steps=5,
            seed=seed,
        )
        assert r.history["n_levels"] == 6 and r.history["n_leapfrog"] == 1
        assert abs(r.log_z - log_z_exact) < 4 * r.log_z_err + 1e-3
        log_z.append(r.log_z)
        means.append(r.normalized_weights @ r.positions)
    means = np.array(means)
    se = means.std(axis=0, ddof=1) / math.sqrt(len(means))
    assert np.all(np.abs(means.mean(axis=0) - mu) < 4 * se + 5e-3), (means.mean(0), se)
    assert abs(np.mean(log_z) - log_z_exact) < 4 * np.std(log_z, ddof=1) / math.sqrt(6) + 1e-3


# ----------------------------------------------------------------------------- robustness
def test_infinite_energies_and_outside_support():
    """u = +inf beyond a wall, log q = -inf in a hole of the proposal's support, nan inputs:
    those particles get weight 0, moves never cross, nothing is NaN, log Z still right."""
    sd = 1.5
    hole = -4.5  # q = 0 for x0 < hole (renormalised truncated Gaussian)
    log_norm = math.log(0.5 * math.erfc(-(-hole / sd) / math.sqrt(2)))  # P(x0 >= hole)

    def log_q(x):
        lq = -0.5 * (x**2).sum(1) / sd**2 - 2 * math.log(sd) - math.log(2 * math.pi) - log_norm
        return torch.where(x[:, 0] < hole, torch.full_like(lq, -math.inf), lq)

    def u(x):  # standard Gaussian with a hard wall at x0 = 1
        e = 0.5 * (x**2).sum(1)
        return torch.where(x[:, 0] > 1.0, torch.full_like(e, math.inf), e)

    log_z_exact = math.log(2 * math.pi) + math.log(0.5 * math.erfc(-1 / math.sqrt(2)))
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=(3000, 2)) * sd
    x0 = x0[x0[:, 0] >= hole][:2000]
    x0[:3] = np.nan  # non-finite positions
    x0[3:6] = [-5.0, 0.0]  # outside q's support, finite energy (log w would be +inf)
    energy = Counting(u)
    with np.errstate(all="raise"):  # no hidden nan / inf arithmetic warnings either
        r = refine(x0, energy, log_q=log_q, seed=0)
    assert r.history["n_invalid_initial"] > 400  # the ~25 % beyond the wall, plus 6
    assert not np.isnan(r.log_weights).any() and not np.isposinf(r.log_weights).any()
    alive = np.isfinite(r.log_weights)
    assert alive.mean() > 0.9  # resampled away
    assert np.all(r.positions[alive, 0] <= 1.0)  # never moved past the wall
    assert np.isfinite(r.reduced_energy[alive]).all()
    # moves at b = 1 follow the target alone, which may leave q's support (x0 < hole)
    assert not np.isnan(r.log_q[alive]).any() and not np.isposinf(r.log_q[alive]).any()
    assert abs(r.log_z - log_z_exact) < 4 * r.log_z_err + 5e-3  # 6 of 2000 replaced: -0.003
    assert np.isfinite(r.log_z_err)
    assert energy.n == r.n_energy_evals < 2000 + r.history["n_energy_evals"][-1]
    # the first call skipped the 3 non-finite positions
    assert r.history["n_energy_evals"][0] >= 1997


def test_nothing_valid_raises():
    def u(x):
        return torch.full((len(x),), math.inf, dtype=x.dtype)

    with pytest.raises(InputError, match="nothing to refine"):
        refine(gauss_draws(10, 0), u, log_q=gauss_log_q)


def test_bad_arguments():
    x = gauss_draws(20, 0)
    with pytest.raises(InputError, match="log_q"):
        refine(x, u_dw)
    with pytest.raises(InputError, match="schedule"):
        refine(x, u_dw, log_q=gauss_log_q, schedule=[0.5, 0.3, 1.0])
    with pytest.raises(InputError, match="schedule"):
        refine(x, u_dw, log_q=gauss_log_q, schedule=[0.5, 0.9])
    with pytest.raises(InputError, match="kernel"):
        refine(x, u_dw, log_q=gauss_log_q, kernel="nuts")


def test_deterministic_with_seed():
    x0 = gauss_draws(300, 0)
    a = refine(x0, u_dw, log_q=gauss_log_q, seed=5, n_steps=3)
    b = refine(x0, u_dw, log_q=gauss_log_q, seed=5, n_steps=3)
    c = refine(x0, u_dw, log_q=gauss_log_q, seed=6, n_steps=3)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.log_weights, b.log_weights)
    assert a.log_z == b.log_z and a.history == b.history
    assert not np.array_equal(a.positions, c.positions)


@pytest.mark.parametrize(("kernel", "n_leapfrog"), [("hmc", 3), ("mala", 1)])
def test_energy_evaluations_are_counted(kernel, n_leapfrog):
    n, levels, steps = 200, 3, 2
    energy = Counting(u_dw)
    r = refine(
        gauss_draws(n, 1),
        energy,
        log_q=gauss_log_q,
        schedule=[1 / 3, 2 / 3, 1.0],
        n_steps=steps,
        kernel=kernel,
        n_leapfrog=3,
        batch_size=64,
        seed=0,
    )
    assert r.n_energy_evals == energy.n == n * (1 + levels * steps * n_leapfrog)
    assert r.history["n_energy_evals"] == [n * (1 + k * steps * n_leapfrog) for k in (1, 2, 3)]
    assert r.history["betas"] == pytest.approx([0, 1 / 3, 2 / 3, 1])


def test_generator_like_object_and_systematic_resampling():
    class Gen:  # the duck type of a BoltzmannGenerator: .energy and .log_prob
        energy = staticmethod(u_dw)
        log_prob = staticmethod(gauss_log_q)

    a = refine(gauss_draws(200, 2), Gen(), n_steps=2, seed=0)
    b = refine(gauss_draws(200, 2), u_dw, log_q=gauss_log_q, n_steps=2, seed=0)
    np.testing.assert_array_equal(a.positions, b.positions)
    # systematic resampling: every particle gets floor(N w) or ceil(N w) copies
    w = np.random.default_rng(0).dirichlet(np.ones(50))
    idx = systematic_resample(w, np.random.default_rng(1))
    counts = np.bincount(idx, minlength=50)
    assert counts.sum() == 50 and np.all(np.abs(counts - 50 * w) < 1)


# ----------------------------------------------------------------------------- molecules
def test_alanine_dipeptide_energy_model(tmp_path):
    import boltzgen as bg
    from boltzgen.energy import EnergyModel

    system = bg.System.alanine_dipeptide()
    md = bg.load_md("data/adp-vacuum-300K.h5")
    s = Samples.from_trajectory(md.trajectory[::50][:8])
    n = len(s)

    def log_q(x):  # flat "proposal": pi_b = exp(-b u), a high-temperature start
        return torch.zeros(len(x), dtype=x.dtype)

    with EnergyModel(system, platform="Reference") as energy:
        r = refine(s, energy, log_q=log_q, schedule=[0.5, 1.0], n_steps=2, n_leapfrog=3, seed=0)
        u_final = energy(torch.as_tensor(r.positions, dtype=torch.float64)).numpy()
    assert isinstance(r, RefinedSamples) and isinstance(r, Samples)
    assert r.positions.dtype == np.float32 and r.positions.shape == (n, system.n_atoms, 3)
    assert r.n_energy_evals == n * (1 + 2 * 2 * 3)
    assert np.isfinite(r.log_weights).all() and np.isfinite(r.reduced_energy).all()
    assert np.isfinite(r.log_z)
    w = np.exp(r.log_weights - r.log_weights.max())  # Kish of the final weights, by hand
    assert r.ess == pytest.approx(w.sum() ** 2 / (n * (w**2).sum()), rel=1e-9)
    np.testing.assert_allclose(r.reduced_energy, u_final, atol=0.05)  # float32 positions
    np.testing.assert_array_equal(r.log_q, 0.0)
    assert np.mean(r.history["acceptance"]) > 0.1
    assert r.to_mdtraj().n_frames == n
    back = RefinedSamples.load(r.save(tmp_path / "refined.h5"))
    assert back.log_z == r.log_z and back.n_energy_evals == r.n_energy_evals
    assert back.history["betas"] == r.history["betas"]
    np.testing.assert_array_equal(back.log_weights, r.log_weights)
    np.testing.assert_array_equal(back.extra["ancestor"], r.extra["ancestor"])
    assert len(Samples.load(tmp_path / "refined.h5")) == n  # a plain samples file too


def test_generator_sample_refine_option():
    import boltzgen as bg

    system = bg.System.alanine_dipeptide()
    md = bg.load_md("data/adp-vacuum-300K.h5")
    gen = bg.BoltzmannGenerator.build(
        system, data=md.trajectory[::20], n_layers=1, hidden=(8,), n_components=2
    )
    gen.energy = bg.EnergyModel(system, platform="Reference")
    opts = {"schedule": [0.5, 1.0], "n_steps": 1, "n_leapfrog": 2, "seed": 0}
    r = gen.sample(6, refine=opts)
    assert isinstance(r, RefinedSamples) and r.positions.shape == (6, system.n_atoms, 3)
    assert 6 < r.n_energy_evals <= 6 * (1 + 2 * 1 * 2)  # dead (clashing) draws are not moved
    assert np.isfinite(r.log_z)
    assert bg.refine is refine  # the library entry point
    with pytest.raises(InputError, match="refine"):
        gen.sample(2, refine="yes")


# ----------------------------------------------------------------------------- stratified
# A minor basin behind a high barrier: u = 8 (x^2 - 1)^2 + 1.5 x + y^2 / 2, P(x > 0) ~ 5 %.
_FX2 = np.exp(-(8.0 * (_GRID**2 - 1) ** 2 + 1.5 * _GRID))
LOG_Z_MINOR = math.log(_FX2.sum() * _DX) + 0.5 * math.log(2 * math.pi)
P_MINOR = float(_FX2[_GRID > 0].sum() / _FX2.sum())
_S2 = 0.3


def u_minor(x: torch.Tensor) -> torch.Tensor:
    return 8.0 * (x[:, 0] ** 2 - 1) ** 2 + 1.5 * x[:, 0] + 0.5 * x[:, 1] ** 2


def mixture_log_q(x: torch.Tensor) -> torch.Tensor:
    """0.5 N(-1, 0.3^2) + 0.5 N(1, 0.3^2) in x, N(0, 1) in y (q(x > 0) = 1/2 exactly)."""
    lx = torch.logsumexp(
        torch.stack([-0.5 * ((x[:, 0] - m) / _S2) ** 2 for m in (-1.0, 1.0)]), dim=0
    )
    norm = math.log(2.0) + math.log(_S2) + 0.5 * math.log(2 * math.pi)
    return lx - norm - 0.5 * x[:, 1] ** 2 - 0.5 * math.log(2 * math.pi)


def mixture_draws(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return np.stack([m + _S2 * rng.normal(size=n), rng.normal(size=n)], axis=1)


def sign_strata(x: np.ndarray) -> np.ndarray:
    return np.where(x[:, 0] > 0, "+", "-")


@pytest.mark.parametrize("mass", [None, {"+": 0.5, "-": 0.5}])
def test_stratified_refinement_minor_basin(mass):
    """Stratified SMC keeps the minor basin's particles: its population and log Z agree with
    quadrature within the seed-to-seed error, with the stated error bar the right size, and
    moves never cross the stratum boundary."""
    log_z, err, p_minor = [], [], []
    for seed in range(6):
        x0 = mixture_draws(600, seed)
        r = refine(
            x0, u_minor, log_q=mixture_log_q, strata=sign_strata, strata_mass=mass, seed=seed
        )
        assert isinstance(r, SMCResult) and len(r) == 600
        assert np.array_equal(sign_strata(r.positions), sign_strata(x0))  # moves stay inside
        rows = {row["label"]: row for row in r.history["strata"]}
        assert set(rows) == {"+", "-"} and rows["+"]["n"] + rows["-"]["n"] == 600
        assert r.n_energy_evals == sum(row["n_energy_evals"] for row in rows.values())
        w = r.normalized_weights
        p_minor.append(float(w[r.positions[:, 0] > 0].sum()))
        log_z.append(r.log_z)
        err.append(r.log_z_err)
        lw = r.log_weights  # the ESS is Kish's of the final weights (by hand)
        w = np.exp(lw - lw.max())
        assert r.ess == pytest.approx(w.sum() ** 2 / (len(w) * (w**2).sum()), rel=1e-9)
    log_z, p_minor = np.array(log_z), np.array(p_minor)
    k = len(log_z)
    assert abs(log_z.mean() - LOG_Z_MINOR) < 4 * log_z.std(ddof=1) / math.sqrt(k) + 2e-3
    assert abs(p_minor.mean() - P_MINOR) < 4 * p_minor.std(ddof=1) / math.sqrt(k) + 2e-3
    assert 0.3 < np.mean(err) / log_z.std(ddof=1) < 3.0, (np.mean(err), log_z.std(ddof=1))


# Samples hold (N, atoms, 3): one "atom" at (x, y, z), z ~ N(0, 1) in target and proposal
def u3(p):
    p = p.reshape(len(p), 3)
    return u_minor(p[:, :2]) + 0.5 * p[:, 2] ** 2


def lq3(p):
    p = p.reshape(len(p), 3)
    return mixture_log_q(p[:, :2]) - 0.5 * p[:, 2] ** 2 - 0.5 * math.log(2 * math.pi)


def strata3(p):
    return sign_strata(p.reshape(len(p), 3))


def test_stratified_refinement_keeps_samples_layout_and_checks_inputs():
    rng = np.random.default_rng(3)
    x0 = np.concatenate([mixture_draws(200, 3), rng.normal(size=(200, 1))], axis=1)
    x0 = x0.reshape(200, 1, 3)
    t = torch.as_tensor(x0)
    s = Samples(
        positions=x0.astype(np.float32),
        log_q=lq3(t).numpy(),
        reduced_energy=u3(t).numpy(),
        log_weights=np.zeros(200),
    )
    r = refine(s, u3, log_q=lq3, strata=strata3, n_steps=2, seed=0)
    assert isinstance(r, RefinedSamples) and r.positions.shape == (200, 1, 3)
    assert set(r.extra) >= {"ancestor", "island", "stratum"}
    # each ancestor lies in its descendant's stratum
    assert np.array_equal(strata3(x0[r.extra["ancestor"]]), strata3(r.positions))
    with pytest.raises(InputError, match="strata_mass"):
        refine(s, u3, log_q=lq3, strata=strata3, strata_mass={"+": 1.0})


@pytest.mark.parametrize("strata", [None, sign_strata])
def test_time_limit_jumps_to_the_target_and_stays_unbiased(strata):
    """With no time left the first level reweights straight to b = 1 (one level per
    stratum, no moves, recorded in the history); log Z is then plain importance sampling's,
    still unbiased against quadrature over seeds. Without a limit the schedule takes more
    levels."""
    log_z, err = [], []
    for seed in range(6):
        x0 = mixture_draws(600, seed)
        kw = {"strata": strata} if strata is not None else {}
        with pytest.warns(RuntimeWarning, match="time limit"):
            r = refine(x0, u_minor, log_q=mixture_log_q, seed=seed, time_limit=0.0, **kw)
        assert r.history["stopped_at_time_limit"] is True
        assert r.history["n_levels"] == 1
        # the jump's weights, before resampling: from b = 0 they are the flow's own
        # importance weights -u - log q, and the record says so
        cuts = [r.history["cut"]] if strata is None else r.history["strata"][0]["cuts"]
        cut = cuts[0]
        assert cut["beta_from"] == 0.0
        if strata is None:
            lw = -u_minor(torch.as_tensor(x0)).numpy() - mixture_log_q(torch.as_tensor(x0)).numpy()
            assert cut["ess_count"] == pytest.approx(kish_ess(lw) * len(lw), rel=1e-9)
            assert cut["k_hat"] == pytest.approx(k_hat(lw), abs=1e-9)
        if strata is None:
            assert r.history["betas"] == [0.0, 1.0]
            assert np.isnan(r.history["acceptance"][0])  # no moves after the jump
        log_z.append(r.log_z)
        err.append(r.log_z_err)
    log_z = np.array(log_z)
    assert abs(log_z.mean() - LOG_Z_MINOR) < 4 * log_z.std(ddof=1) / math.sqrt(len(log_z)) + 2e-3
    free = refine(mixture_draws(600, 0), u_minor, log_q=mixture_log_q, seed=0)
    assert free.history["n_levels"] > 1 and free.history["stopped_at_time_limit"] is False
    with pytest.raises(InputError, match="time_limit"):
        refine(mixture_draws(50, 0), u_minor, log_q=mixture_log_q, time_limit=-1.0)
