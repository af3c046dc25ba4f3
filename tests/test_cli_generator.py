"""`boltzgen train | sample | free-energy` end to end at toy scale, on a non-ADP molecule too."""

from __future__ import annotations

import json

import mdtraj
import pytest
from typer.testing import CliRunner

import boltzgen as bg
from boltzgen.cli import app
from boltzgen.cores import available_cores
from boltzgen.paths import data_file

runner = CliRunner()


@pytest.fixture(scope="module")
def tyr_md(tmp_path_factory):
    """Short MD of ACE-TYR-NME: nothing in the pipeline may be specific to alanine dipeptide."""
    system = bg.System.from_pdb(data_file("ace-tyr-nme.pdb"))
    out = tmp_path_factory.mktemp("tyr") / "md.h5"
    bg.simulate(system, n_steps=2000, timestep=0.001, report_interval=10, out=out, seed=3)
    return out


def test_train_sample_free_energy_on_another_peptide(tyr_md, tmp_path):
    model_dir = tmp_path / "model"
    res = runner.invoke(
        app,
        [
            "train",
            str(tyr_md),
            "--out",
            str(model_dir),
            "--epochs",
            "2",
            "--layers",
            "3",
            "--masks",
            "hierarchical",  # saved and rebuilt by `sample` from the model file
            "--hidden",
            "16",
            "--components",
            "3",
            "--batch-size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "validation NLL" in res.output
    hist = json.loads((model_dir / "history.json").read_text())
    assert len(hist["train_loss"]) == 2

    res = runner.invoke(
        app,
        ["sample", str(model_dir / "model.pt"), "-n", "200", "--out", str(tmp_path / "s")]
        + ["--refine-seconds", "1"],
    )
    assert res.exit_code == 0, res.output
    assert "energy evaluations" in res.output and "dF phi:2 =" in res.output
    assert mdtraj.load(str(tmp_path / "s" / "refined.h5")).n_atoms == 33
    traj = mdtraj.load(str(tmp_path / "s" / "samples.h5"))
    assert traj.n_frames == 200 and traj.n_atoms == 33
    assert (tmp_path / "s" / "ramachandran.png").exists()
    # two models are sampled as one mixture (here one flow twice: its mixture is itself)
    two = [str(model_dir / "model.pt")] * 2
    res = runner.invoke(app, ["sample", *two, "-n", "101", "--out", str(tmp_path / "m2")])
    assert res.exit_code == 0, res.output
    assert "mixture of 2 flows: 101 samples" in res.output
    assert mdtraj.load(str(tmp_path / "m2" / "samples.h5")).n_frames == 101

    res = runner.invoke(
        app,
        [
            "free-energy",
            str(model_dir / "model.pt"),
            "-n",
            "300",
            "--cv",
            "psi",
            "--bootstrap",
            "20",
            "--out",
            str(tmp_path / "f"),
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "f" / "free_energy.json").read_text())
    assert summary["cv"] == "psi" and summary["n_samples"] == 300
    assert (tmp_path / "f" / "fes_psi.png").exists()

    # the samples written by `sample` can be reweighted again without the model
    args = ["--cv", "psi", "--bootstrap", "20", "--out", str(tmp_path / "g")]
    res = runner.invoke(app, ["free-energy", str(tmp_path / "s" / "samples.h5"), *args])
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "g" / "free_energy.json").read_text())
    assert again["n_samples"] == 200 and "dF" in res.output
    # a file that is not a model is a clean error, not a traceback
    res = runner.invoke(app, ["free-energy", str(tmp_path / "s" / "ramachandran.png"), *args])
    assert res.exit_code != 0 and "not a boltzgen model file" in res.output
    assert "Traceback" not in res.output


def test_train_reports_bad_data_cleanly(tmp_path):
    bad = tmp_path / "nope.h5"
    res = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    assert "does not exist" in res.output


def test_train_balance_state_without_frames_is_a_clean_error(tyr_md, tmp_path):
    args = ["train", str(tyr_md), "--out", str(tmp_path / "m"), "--epochs", "1"]
    balance = ["--balance-cv", "phi", "--balance-state", "3.0,3.05", "--balance-share", "0.1"]
    res = runner.invoke(app, [*args, *balance])
    assert res.exit_code != 0
    assert "no frame lies in state" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, [*args, "--balance-cv", "chi9", *balance[2:]])
    assert res.exit_code != 0 and "chi9" in res.output


@pytest.mark.parametrize("cores", [1, 2])
def test_demo_prints_a_verdict_for_its_number(tmp_path, cores):
    """The demo trains independent flows (side by side when it has the cores: flow 2 in a
    worker process, whose lines the demo prints) and says whether its dF can be trusted, and
    why."""
    args = ["demo", "--out", str(tmp_path / "d"), "--minutes", "0.1", "-n", "1000"]
    refine = "1" if cores == 1 else "0"  # each flow's refinement line names its flow
    res = runner.invoke(
        app, [*args, "--refine-seconds", refine, "--flows", "2", "--cores", str(cores)]
    )
    assert res.exit_code == 0, res.output
    assert ("flow 2/2: refined " in res.output) == (refine == "1")
    assert ("side by side" in res.output) == (min(cores, available_cores()) > 1)
    assert "flow 1/2: trained" in res.output and "flow 2/2: trained" in res.output
    assert "flow 2/2: ESS" in res.output
    assert (tmp_path / "d" / "flow2" / "model.pt").exists()
    (line,) = [x for x in res.output.splitlines() if x.startswith("dF = ")]
    assert line.endswith((": reliable", ": not converged"))
    assert "mean of 2 independent flows" in line
    said_why = "\n  because " in res.output
    assert said_why == line.endswith(": not converged")  # reasons exactly when not converged
