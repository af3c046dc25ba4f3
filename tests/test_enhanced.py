"""Umbrella sampling + MBAR and temperature replica exchange (tiny runs on ADP, vacuum)."""

from __future__ import annotations

import json

import mdtraj
import numpy as np
import pytest

import boltzgen as bg
from boltzgen.enhanced import geometric_temperatures, replica_exchange, umbrella_sampling
from boltzgen.errors import InputError
from boltzgen.umbrella import _periodic_distance, _umbrella_plan


@pytest.fixture(scope="module")
def adp():
    return bg.System.alanine_dipeptide()


def test_periodic_distance():
    assert _periodic_distance(np.array([3.0]), -3.0)[0] == pytest.approx(2 * np.pi - 6.0)
    assert _periodic_distance(np.array([0.5]), -0.5)[0] == pytest.approx(1.0)


def test_umbrella_plan_walks_outward_from_the_minimum():
    centers = np.linspace(-np.pi, np.pi, 8, endpoint=False)  # -pi, -3pi/4, ..., 3pi/4
    plan = _umbrella_plan(centers, start=-1.5)  # nearest centre: -pi/2 (index 2)
    windows = [w for w, _ in plan]
    assert windows[0] == 2 and plan[0][1] is None
    assert sorted(windows) == list(range(8))
    # every window starts from a ladder neighbour that has already run
    done = {2}
    for w, pred in plan[1:]:
        assert pred in done
        gap = _periodic_distance(centers[w], centers[pred])
        assert gap == pytest.approx(np.pi / 4)
        done.add(w)


def test_tiny_umbrella_gives_finite_mbar_output(adp):
    phi = bg.cv.dihedral(adp, "phi")
    centers = [-2.2, -1.6, -1.0]
    calls = []
    r = umbrella_sampling(
        adp,
        phi.atoms,
        centers,
        k=100.0,
        n_steps_per_window=600,
        n_equilibration=100,
        report_interval=20,
        n_minimum_search=200,
        langevin=bg.LangevinConfig(seed=1, platform="Reference"),
        progress=lambda i, n: calls.append((i, n)),
    )
    assert calls[-1] == (3, 3)
    assert [len(v) for v in r.cv] == [30, 30, 30]
    # samples stay near their window (restraint works)
    for c, v in zip(r.centers, r.cv, strict=True):
        assert np.mean(_periodic_distance(v, c)) < 0.6
    df, err = r.free_energy_difference((-3.1416, -1.6), (-1.6, 3.1416))
    assert np.isfinite(df) and np.isfinite(err) and err > 0
    centers_b, f, f_err = r.profile(bins=12)
    assert centers_b.shape == f.shape == f_err.shape == (12,)
    assert np.nanmin(f) == 0.0 and np.isfinite(f).sum() >= 2
    assert np.isnan(f).any()  # nothing sampled at phi > 0 with these windows
    with pytest.raises(InputError, match="no umbrella sample"):
        r.free_energy_difference((1.0, 2.0), (-3.1416, 0.0))


def test_umbrella_rejects_bad_input(adp):
    with pytest.raises(InputError):
        umbrella_sampling(adp, (0, 1, 2), [0.0, 1.0])
    with pytest.raises(InputError):
        umbrella_sampling(adp, (4, 6, 8, 14), [0.0])
    with pytest.raises(InputError):
        umbrella_sampling(adp, (4, 6, 8, 14), [0.0, 1.0], k=-1.0)


def test_tiny_remd_swaps_and_writes_readable_file(adp, tmp_path):
    temps = geometric_temperatures(300.0, 450.0, 3)
    out = tmp_path / "remd.h5"
    r = replica_exchange(
        adp,
        temps,
        n_steps=2000,
        exchange_interval=20,
        report_interval=100,
        n_equilibration=200,
        out=out,
        langevin=bg.LangevinConfig(seed=3, platform="Reference"),
    )
    assert r.trajectory.n_frames == 20
    assert r.n_attempts.sum() > 0 and np.all(r.acceptance > 0)  # neighbours do swap
    assert len(np.unique(r.replica_of_frame)) > 1  # walkers visit the target temperature
    md = bg.load_md(out)
    assert md.trajectory.n_frames == 20 and md.forces.shape == (20, 22, 3)
    np.testing.assert_allclose(md.potential_energy, r.potential_energy, rtol=1e-5, atol=1e-3)
    assert md.metadata["temperatures_K"] == pytest.approx(list(temps))
    assert md.system().temperature == 300.0
    assert mdtraj.load(str(out)).n_frames == 20
    # MD-like data go straight into the estimators (uniform weights)
    phi = bg.cv.dihedral(adp, "phi")
    states = ((-3.1416, -1.2), (-1.2, 3.1416))
    assert (
        bg.free_energy_difference(md, phi, *states, n_bootstrap=0)[0]
        == (bg.free_energy_difference(md.trajectory, phi, *states, n_bootstrap=0)[0])
    )
    # recorded forces are those of the recorded configurations
    with bg.EnergyModel(adp, platform="Reference") as em:
        u, f = em.energy_and_forces(md.trajectory.xyz[:3].astype(np.float64))
    np.testing.assert_allclose(np.asarray(u) * adp.kT, md.potential_energy[:3], atol=0.05)
    np.testing.assert_allclose(np.asarray(f), md.forces[:3], atol=0.5)


def test_remd_rejects_bad_ladders(adp):
    with pytest.raises(InputError, match="target temperature"):
        replica_exchange(adp, [310.0, 400.0], n_steps=100, report_interval=100)
    with pytest.raises(InputError, match="increasing"):
        replica_exchange(adp, [300.0, 290.0], n_steps=100, report_interval=100)
    with pytest.raises(InputError, match="multiple"):
        replica_exchange(adp, [300.0, 400.0], n_steps=1000, exchange_interval=30)


def test_cli_remd_writes_file(tmp_path):
    from typer.testing import CliRunner

    from boltzgen.cli import app

    out = tmp_path / "r.h5"
    res = CliRunner().invoke(
        app,
        ["remd", "--steps", "1000", "--equilibration", "0", "--interval", "500",
         "--exchange-interval", "100", "--replicas", "2", "--t-max", "350",
         "--platform", "Reference", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert bg.load_md(out).trajectory.n_frames == 2


def test_cli_umbrella_takes_residue_numbered_dihedrals():
    from typer.testing import CliRunner

    from boltzgen.cli import app

    res = CliRunner().invoke(app, ["umbrella", "--dihedral", "phi:3"])
    assert res.exit_code == 2
    assert "residue NME3 (chain 0) has no phi dihedral; residues with phi" in res.output
    res = CliRunner().invoke(app, ["umbrella", "--dihedral", "phi:x"])
    assert res.exit_code == 2 and "integer PDB residue number" in res.output
    res = CliRunner().invoke(
        app,
        ["umbrella", "--dihedral", "phi:2", "--windows", "4", "--steps", "400",
         "--equilibration", "0", "--platform", "Reference"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["cv_atoms"] == list(
        bg.cv.dihedral(bg.System.alanine_dipeptide(), "phi").atoms
    )


def test_old_keywords_still_work_with_a_deprecation_warning(adp):
    kw = dict(n_steps=400, exchange_interval=100, report_interval=200, n_equilibration=0)
    new = replica_exchange(
        adp, [300.0, 330.0], langevin=bg.LangevinConfig(seed=5, platform="Reference"), **kw
    )
    with pytest.warns(DeprecationWarning, match="langevin="):
        old = replica_exchange(adp, [300.0, 330.0], seed=5, platform="Reference", **kw)
    np.testing.assert_array_equal(old.trajectory.xyz, new.trajectory.xyz)
    assert old.settings["seed"] == 5 and old.settings["platform"] == "Reference"
    with pytest.raises(InputError, match="not both"):
        replica_exchange(adp, [300.0, 330.0], langevin=bg.LangevinConfig(), seed=1, **kw)


# ------------------------------------------------------------------ the exchange criterion
def test_exchange_log_acceptance_is_the_closed_form():
    from boltzgen.constants import GAS_CONSTANT
    from boltzgen.remd import exchange_log_acceptance

    for u_i, u_j, t_i, t_j in [(-50.0, -40.0, 300.0, 350.0), (-40.0, -50.0, 300.0, 450.0),
                               (12.0, 12.0, 300.0, 400.0), (-7.5, 3.0, 280.0, 290.0)]:  # fmt: skip
        expected = (1 / (GAS_CONSTANT * t_i) - 1 / (GAS_CONSTANT * t_j)) * (u_i - u_j)
        assert exchange_log_acceptance(u_i, u_j, t_i, t_j) == pytest.approx(expected, rel=1e-12)
    # the lower energy moving to the lower temperature is always accepted; the reverse is not
    assert exchange_log_acceptance(-40.0, -50.0, 300.0, 350.0) > 0
    assert exchange_log_acceptance(-50.0, -40.0, 300.0, 350.0) < 0
    # symmetric: swapping the roles of the two replicas gives the same number
    assert exchange_log_acceptance(-50.0, -40.0, 300.0, 350.0) == pytest.approx(
        exchange_log_acceptance(-40.0, -50.0, 350.0, 300.0)
    )


def test_exchange_sweep_accepts_at_the_closed_form_rate():
    from boltzgen.constants import GAS_CONSTANT
    from boltzgen.remd import exchange_sweep

    temps = np.array([300.0, 330.0, 363.0, 400.0])
    u = np.array([-60.0, -52.0, -49.0, -30.0])  # every neighbour pair unfavourable to swap
    beta = 1 / (GAS_CONSTANT * temps)
    p = np.minimum(1.0, np.exp((beta[:-1] - beta[1:]) * (u[:-1] - u[1:])))
    assert np.all((p > 0.05) & (p < 0.95))  # a rate to measure, not 0 or 1
    rng = np.random.default_rng(0)
    n = 20_000
    counts = np.zeros(3)
    for trial in range(n):
        for i in exchange_sweep(u, temps, trial % 2, rng):
            counts[i] += 1
    attempts = np.array([n / 2, n / 2, n / 2])  # even pairs on even sweeps, odd on odd
    rate = counts / attempts
    sigma = np.sqrt(p * (1 - p) / attempts)
    assert np.all(np.abs(rate - p) < 4 * sigma), (rate, p)
    # favourable swaps are always taken and draw no random number
    state = rng.bit_generator.state
    assert exchange_sweep(u[::-1].copy(), temps, 0, rng) == [0, 2]
    assert rng.bit_generator.state == state


def test_two_replicas_swap_at_the_rate_their_energy_distributions_predict(adp, tmp_path):
    """Plain MD at each temperature gives the energy distributions; the expected acceptance
    of a swap of independent draws is E[min(1, exp((beta_1 - beta_2)(U_1 - U_2)))]. High
    friction (which leaves the distributions unchanged) decorrelates the energies within a few
    steps, so short runs pin the prediction down (0.63 +- 0.01 over MD seeds; doubling or
    halving the exponent would predict 0.50 or 0.76)."""
    from boltzgen.remd import exchange_log_acceptance

    temps = [300.0, 340.0]
    energies = []
    for t in temps:
        cfg = bg.LangevinConfig(temperature=t, friction=50.0, seed=11, platform="Reference")
        out = tmp_path / f"md{t:.0f}.h5"
        bg.simulate(adp, 30_000, report_interval=20, out=out, langevin=cfg)
        energies.append(bg.load_md(out).potential_energy[250:])  # 5000 steps to equilibrate
    log_acc = exchange_log_acceptance(energies[0][:, None], energies[1][None, :], *temps)
    predicted = float(np.minimum(1.0, np.exp(log_acc)).mean())
    r = replica_exchange(
        adp, temps, n_steps=30_000, exchange_interval=20, report_interval=100,
        n_equilibration=5000,
        langevin=bg.LangevinConfig(friction=50.0, seed=4, platform="Reference"),
    )  # fmt: skip
    assert 0.2 < predicted < 0.9
    assert r.n_attempts[0] > 800
    assert abs(r.acceptance[0] - predicted) < 0.06, (r.acceptance[0], predicted)
