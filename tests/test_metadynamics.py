"""Metadynamics over (phi, psi) with the learned bias frozen and frames reweighted exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import boltzgen as bg
from boltzgen.errors import InputError
from boltzgen.metadynamics import metadynamics

REPO = Path(__file__).resolve().parents[1]
PHI_POS, PHI_NEG = (0.0, math.pi + 1e-4), (-math.pi - 1e-4, 0.0)


@pytest.fixture(scope="module")
def adp():
    return bg.System.alanine_dipeptide()


@pytest.fixture(scope="module")
def run(adp):
    cvs = [bg.cv.dihedral(adp, "phi"), bg.cv.dihedral(adp, "psi")]
    return metadynamics(
        adp,
        cvs,
        n_metadynamics_steps=600_000,
        n_steps=800_000,
        langevin=bg.LangevinConfig(seed=3, platform="Reference"),
    )


def test_frames_weights_and_energies_are_consistent(adp, run):
    n = 800_000 // 250
    assert run.cv.shape == (n, 2) and run.positions.shape == (n, adp.n_atoms, 3)
    assert np.isfinite(run.bias).all() and (run.bias >= 0).all() and run.bias.max() > 10.0
    # the recorded (unbiased) energy is the force field's energy of the recorded frame
    u = bg.EnergyModel(adp)(torch.as_tensor(run.positions[:20], dtype=torch.float64))
    np.testing.assert_allclose(u.numpy(), run.potential_energy[:20] / run.kT, atol=1e-3)
    np.testing.assert_allclose(run.cv[:, 0], bg.cv.dihedral(adp, "phi")(run.positions), atol=1e-5)
    # the frozen bias makes phi > 0 common (a few frames in 10^4 without it), and the
    # reweighting must take that back out
    assert (run.cv[:, 0] > 0).mean() > 0.05
    # the ESS is Kish's of the exact weights exp(+V/kT) of the frozen bias (recomputed here)
    w = np.exp((run.bias - run.bias.max()) / run.kT)
    assert run.ess == pytest.approx(w.sum() ** 2 / (len(w) * (w**2).sum()), rel=1e-9)
    assert 0.02 < run.ess < 0.9  # the bias is not flat: some weight variance must show


def test_reweighted_dF_matches_the_converged_reference(run):
    # reference 3.61 +- 0.05 kT (twelve independent 2-D metadynamics walkers, RESULTS.md
    # 2026-12-04); a walker's stated block-bootstrap error was 1.3x too small there, so the
    # band is 3 sigma of the inflated error. A sign error in the weights gives about -3, an
    # unweighted estimate about 2.
    df, err = run.free_energy_difference(0, PHI_POS, PHI_NEG)
    assert 0.05 < err < 1.0
    assert abs(df - 3.61) < 3 * math.hypot(1.3 * err, 0.05), (df, err)
    # a CV given as a callable gives the same answer as the biased dihedral's column
    df2, _ = run.free_energy_difference(
        bg.cv.dihedral(bg.System.alanine_dipeptide(), "phi"), PHI_POS, PHI_NEG
    )
    assert df2 == pytest.approx(df, abs=1e-6)
    halves = run.sign_free_energy_by_part(0, 2)
    assert len(halves) == 2 and all(abs(h - df) < 2.0 for h in halves)
    (cx, cy), f, f_err = run.free_energy_surface(bins=30)
    assert f.shape == (30, 30) and np.nanmin(f) == 0.0 and cx.shape == cy.shape == (30,)


def test_bad_input_is_named(adp):
    phi = bg.cv.dihedral(adp, "phi")
    with pytest.raises(InputError, match="one to three"):
        metadynamics(adp, [phi, phi, phi, phi])
    with pytest.raises(InputError, match="report_interval"):
        metadynamics(adp, [phi], n_steps=10, report_interval=100)
    with pytest.raises(InputError, match="bias_factor"):
        metadynamics(adp, [phi], bias_factor=1.0)


def test_cli_metad_defaults_to_state_dihedrals(tmp_path):
    from typer.testing import CliRunner

    from boltzgen.cli import app

    pro = str(REPO / "data" / "peptides" / "ace-pro-nme.pdb")
    out = tmp_path / "m.npz"
    res = CliRunner().invoke(
        app,
        ["metad", "--pdb", pro, "--metad-steps", "2000", "--steps", "2000", "--interval",
         "100", "--platform", "Reference", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)
    assert list(row["free_energies"]) == ["psi:2"] and row["n_frames"] == 20
    assert np.load(out)["cv"].shape == (20, 1)
    res = CliRunner().invoke(app, ["metad", "--cv", "phi:3"])
    assert res.exit_code == 2 and "no phi dihedral" in res.output


def test_time_limit_makes_the_step_counts_upper_bounds(adp):
    import time

    phi = bg.cv.dihedral(adp, "phi")
    t0 = time.perf_counter()
    r = metadynamics(
        adp, [phi], n_metadynamics_steps=10**7, n_steps=10**7, time_limit=4.0,
        langevin=bg.LangevinConfig(platform="Reference"),
    )  # fmt: skip
    assert time.perf_counter() - t0 < 10.0
    assert 0 < r.settings["n_metadynamics_steps"] < 10**7
    assert 2 <= len(r.bias) < 10**7 // 250 and r.settings["n_steps"] == 250 * len(r.bias)
    assert r.positions.shape[0] == r.cv.shape[0] == len(r.potential_energy) == len(r.bias)
