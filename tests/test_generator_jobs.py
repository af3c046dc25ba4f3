"""The train -> sample -> free_energy job kinds through the executor's directory protocol."""

from __future__ import annotations

import json
import math

import mdtraj
import numpy as np
import pytest

import boltzgen as bg
from boltzgen.jobs import run_job_dir


def _run(tmp_path, name, kind, params):
    d = tmp_path / name
    d.mkdir()
    (d / "job.json").write_text(json.dumps({"kind": kind, "params": params}))
    out = run_job_dir(d)
    assert out["status"] == "succeeded", out
    return d / "work", out["result"]


def test_train_sample_free_energy_jobs(tmp_path):
    system = bg.System.alanine_dipeptide()
    md = tmp_path / "md.h5"
    bg.simulate(system, n_steps=2000, timestep=0.001, report_interval=10, out=md, seed=0)
    spec = system.to_spec()
    work, res = _run(
        tmp_path,
        "train",
        "train",
        {
            "system": spec,
            "data": str(md),
            "epochs": 2,
            "n_layers": 2,
            "hidden": [16],
            "n_components": 3,
            "batch_size": 64,
        },
    )
    assert res["model_file"] == "model.pt" and res["epochs_run"] == 2
    assert res["best_val_nll"] is not None
    model = str(work / "model.pt")
    work, res = _run(
        tmp_path, "sample", "sample", {"system": spec, "model": model, "n_samples": 100}
    )
    assert res["n_samples"] == 100
    # the reported ESS is Kish's of the written log-weights (recomputed here)
    lw = np.load(work / "samples.npz")["log_weights"]
    w = np.exp(lw - lw[np.isfinite(lw)].max())
    assert res["ess"] == pytest.approx(w.sum() ** 2 / (len(w) * (w**2).sum()), rel=1e-9)
    assert mdtraj.load(str(work / "samples.h5")).n_frames == 100
    # with refinement: refined.h5, and the cost and the refined figures in the summary
    work, res = _run(
        tmp_path,
        "refine",
        "sample",
        {"system": spec, "model": model, "n_samples": 300, "refine_seconds": 2.0},
    )
    r = res["refine"]
    # "ess" is the stratified estimate's variance-equivalent ESS (no closed form here);
    # "ess_final_weights" is Kish's of the weights written to refined.h5 (recomputed here)
    assert r["n_energy_evals"] > r["n_samples"] >= 100 and 0 < r["ess"] <= 1
    lw = bg.Samples.load(work / "refined.h5").log_weights
    w = np.exp(lw - lw[np.isfinite(lw)].max())
    assert r["ess_final_weights"] == pytest.approx(w.sum() ** 2 / (len(w) * (w**2).sum()), rel=1e-6)
    assert "phi:2" in r["free_energies"]
    assert mdtraj.load(str(work / "refined.h5")).n_frames == r["n_samples"]
    work, res = _run(
        tmp_path,
        "fe",
        "free_energy",
        {"system": spec, "model": model, "n_samples": 200, "n_bootstrap": 10},
    )
    assert res["cv"] == "phi" and (work / "fes_phi.png").exists()
    assert "df_kT" in res and "df_err_kT" in res


def test_train_without_data_is_a_clear_non_retryable_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    spec = bg.System.alanine_dipeptide().to_spec()
    (d / "job.json").write_text(json.dumps({"kind": "train", "params": {"system": spec}}))
    out = run_job_dir(d)
    assert out["status"] == "failed" and out["retryable"] is False
    assert "needs training data" in out["error"]["message"]


def test_train_job_balances_a_cv_state(tmp_path):
    system = bg.System.alanine_dipeptide()
    md = tmp_path / "md.h5"
    bg.simulate(system, n_steps=1000, timestep=0.001, report_interval=10, out=md, seed=0)
    phi = bg.cv.dihedral(system, "phi")(bg.load_md(md).trajectory)
    cut = float(np.median(phi))  # both sides of the cut hold frames
    params = {
        "system": system.to_spec(),
        "data": str(md),
        "epochs": 1,
        "n_layers": 1,
        "hidden": [8],
        "n_components": 2,
        "balance": {"cv": "phi", "states": [[cut, math.pi]], "shares": [0.2]},
    }
    _, res = _run(tmp_path, "train", "train", params)
    assert res["balance"]["shares"] == [0.2] and res["epochs_run"] == 1
    # an empty state, or shares that do not match the states, fail cleanly and for good
    for name, balance, message in [
        ("empty", {"states": [[3.0, 3.1]], "shares": [0.1]}, "no frame lies in state"),
        ("mismatch", {"states": [[0.0, 1.0]], "shares": [0.1, 0.2]}, "1 states but 2 shares"),
    ]:
        d = tmp_path / name
        d.mkdir()
        job = {"kind": "train", "params": {**params, "balance": {"cv": "phi", **balance}}}
        (d / "job.json").write_text(json.dumps(job))
        out = run_job_dir(d)
        assert out["status"] == "failed" and out["retryable"] is False
        assert message in out["error"]["message"], out
