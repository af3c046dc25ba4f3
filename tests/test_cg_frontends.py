"""Coarse-graining through the front ends: `boltzgen cg train | simulate` and the service's
cg_train / cg_simulate job kinds via the SDK, on a tiny budget."""

from __future__ import annotations

import json

import mdtraj
import pytest
import torch
from _server_fixtures import ADMIN, ADP, LiveServer, settings_for
from typer.testing import CliRunner

from boltzgen.cli import app
from boltzgen.errors import JobParamsError
from boltzgen.jobs.registry import validate_params
from boltzgen.paths import data_file

torch.set_num_threads(1)

DATA = data_file("adp-vacuum-300K.h5")
TINY = {
    "max_frames": 1000,
    "teacher_epochs": 2,
    "teacher_min_steps": 0,
    "n_teacher_samples": 2000,
    "epochs": 2,
    "hidden": [32, 32],
    "n_walkers": 8,
    "n_steps": 200,
    "report_interval": 10,
}
_SET = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]


def test_cli_cg_train_then_simulate(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["cg", "train", str(DATA), "--out", str(tmp_path / "t"), *_SET])
    assert res.exit_code == 0, res.output
    assert "5 beads: atoms [4, 6, 8, 14, 16]" in res.output and "PMF MSE" in res.output
    ff = tmp_path / "t" / "forcefield.pt"
    assert ff.is_file() and (tmp_path / "t" / "fes.png").stat().st_size > 1000
    assert mdtraj.load(str(tmp_path / "t" / "cg_traj.h5")).n_atoms == 5
    res = runner.invoke(
        app,
        ["cg", "simulate", str(ff), str(DATA), "--out", str(tmp_path / "s"), "--n-walkers", "4"]
        + ["--n-steps", "100", "--set", "report_interval=10"],
    )
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert s["md"]["n_walkers"] == 4 and s["metrics"]["n_model"] == 4 * 10
    assert s["md"]["frames_per_s"] > 0
    # errors are one line naming the problem, exit code 2
    res = runner.invoke(app, ["cg", "train", str(DATA), "--set", "n_walkers=1e9"])
    assert res.exit_code == 2 and "n_walkers must be an integer" in res.output
    res = runner.invoke(app, ["cg", "train", str(DATA), "--beads", "name XX"])
    assert res.exit_code == 2 and "selects no atoms" in res.output
    res = runner.invoke(app, ["cg", "simulate", str(DATA), str(DATA), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not a CG force-field file" in res.output


def test_cli_cg_train_reads_weighted_samples_files(tmp_path):
    """A samples file (refined.h5 of `boltzgen run`): the mapping from its topology, the
    frames weighted by its log-weights; NaN log-weights exit 2 naming the problem."""
    import numpy as np

    from boltzgen.samples import Samples

    traj = mdtraj.load(str(DATA))[:1000]
    n = traj.n_frames
    lw = np.random.default_rng(0).normal(0.0, 0.5, n)
    path = Samples.from_trajectory(traj, log_weights=lw).save(tmp_path / "refined.h5")
    runner = CliRunner()
    res = runner.invoke(app, ["cg", "train", str(path), "--out", str(tmp_path / "t"), *_SET])
    assert res.exit_code == 0, res.output
    assert "5 beads: atoms [4, 6, 8, 14, 16]" in res.output
    s = json.loads((tmp_path / "t" / "summary.json").read_text())
    w = np.exp(lw - lw.max())
    assert s["frame_ess"] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-6)
    # the same samples as the state shares of MD frames: their weighted shares are the target
    from boltzgen.cg import Mapping, basins

    args = ["cg", "train", str(DATA), "--state-shares-from", str(path), *_SET]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "shares")])
    assert res.exit_code == 0 and "state shares: frames" in res.output, res.output
    got = json.loads((tmp_path / "shares" / "summary.json").read_text())["state_shares"]
    m = Mapping.backbone(mdtraj.load_frame(str(path), 0).topology, temperature=300.0)
    want = basins.target_state_shares(path, m, m.cg_system())
    assert got["target"] == pytest.approx({s: v for s, v in want.items() if s in got["target"]})
    lw[5] = np.nan
    bad = Samples.from_trajectory(traj, log_weights=lw).save(tmp_path / "bad.h5")
    res = runner.invoke(app, ["cg", "train", str(bad), "--out", str(tmp_path / "b"), *_SET])
    assert res.exit_code == 2 and "NaN" in res.output, res.output


def test_cg_job_params_are_validated():
    base = {"system": {}, "data": "a1"}
    with pytest.raises(JobParamsError, match="config.epochz"):
        validate_params("cg_train", {**base, "config": {"epochz": 1}})
    with pytest.raises(JobParamsError, match="n_steps must be in"):
        validate_params("cg_train", {**base, "config": {"n_steps": 10**9}})
    with pytest.raises(JobParamsError, match="forcefield"):
        validate_params("cg_simulate", base)
    assert validate_params("cg_train", {**base, "state_shares": "a2"}).state_shares == "a2"


def test_cg_jobs_through_the_service(tmp_path):
    from boltzgen.client import Client

    # the MD artifact comes from a simulate job, as a user's would
    settings = settings_for(tmp_path, executor="local", workers=1)
    with LiveServer(settings) as srv, Client(srv.url, api_key=ADMIN) as client:
        system_id = client.upload_system(ADP).id
        sim = client.submit(
            "simulate",
            system_id=system_id,
            params={"n_steps": 20_000, "report_interval": 20, "seed": 1},
        )
        client.wait(sim.id, timeout=300)
        data = client.artifact(sim.id, "trajectory.h5").id
        job = client.cg_train(system_id, data, wait=True, timeout=600, **TINY)
        assert job.status == "succeeded", job
        names = {a.name for a in client.artifacts(job.id)}
        assert {"forcefield.pt", "cg_traj.h5", "metrics.json", "fes.png", "summary.json"} <= names
        assert job.result["metrics"]["n_model"] == 8 * 20
        ff = client.artifact(job.id, "forcefield.pt").id
        job2 = client.cg_simulate(
            system_id,
            data,
            ff,
            n_walkers=4,
            n_steps=100,
            report_interval=10,
            wait=True,
            timeout=300,
        )
        assert job2.status == "succeeded" and job2.result["md"]["n_walkers"] == 4
        t = client.load_trajectory(job2.id, "cg_traj.h5")
        assert t.n_atoms == 5 and t.n_frames == 40


def test_cg_pipeline_on_a_second_molecule(tmp_path):
    """ACE-TYR-NME end to end through the CLI: MD with forces, backbone beads (5: C(ACE), N, CA,
    C, N(NME)), teacher, student, CG MD, scores. Nothing in the path is ADP-specific."""
    import boltzgen as bg

    system = bg.System.from_pdb(data_file("ace-tyr-nme.pdb"))
    md = tmp_path / "tyr.h5"
    bg.simulate(system, 3000, timestep=0.001, report_interval=3, out=md, seed=2)
    res = CliRunner().invoke(app, ["cg", "train", str(md), "--out", str(tmp_path / "cg"), *_SET])
    assert res.exit_code == 0, res.output
    assert "5 beads" in res.output
    s = json.loads((tmp_path / "cg" / "summary.json").read_text())
    assert s["n_beads"] == 5 and s["n_frames"] == 1000
    assert s["metrics"]["n_model"] == 8 * 20 and s["metrics"]["kl"] >= 0
    t = mdtraj.load(str(tmp_path / "cg" / "cg_traj.h5"))
    assert [a.name for a in t.topology.atoms] == ["C", "N", "CA", "C", "N"]
