"""The one-command pipeline (boltzgen.pipeline): configuration, CV names, budget, stratified
allocation and free energies, and the whole run on a tiny budget through the library, the CLI
(resuming from the stage checkpoints) and the service (job kind ``pipeline`` via the SDK)."""

from __future__ import annotations

import json
import math

import mdtraj
import numpy as np
import pytest
import torch
from _server_fixtures import ADMIN, ADP, LiveServer, settings_for
from typer.testing import CliRunner

from boltzgen.cv import dihedral
from boltzgen.errors import InputError
from boltzgen.generator.balance import backbone_state_labels, pattern_weights, weights_kish
from boltzgen.pipeline.analysis import resolve_cvs
from boltzgen.pipeline.config import PipelineConfig, budget_split, data_sampler, parse_duration
from boltzgen.pipeline.run import run_pipeline
from boltzgen.refinement.planning import (
    strata_free_energy,
    strata_state_free_energies,
    stratified_allocation,
)
from boltzgen.systems import System

torch.set_num_threads(1)

#: small enough for the default suite: ~1 minute on 2 cores
TINY = {
    "budget_minutes": 0.6,
    "n_samples": 600,
    "n_layers": 2,
    "hidden": [32],
    "seed": 1,
    "sampler": "metad",
    "cores": 1,  # no worker processes, one thread (tests/test_cores.py covers more cores)
}


def test_moved_names_still_import_from_boltzgen_pipeline():
    """The science the pipeline used to hold lives in the library now; the old names still
    work and are the same objects."""
    import boltzgen.pipeline as pl
    from boltzgen import analysis, remd_ladder, samples
    from boltzgen.generator import balance, config
    from boltzgen.refinement import planning

    homes = {
        remd_ladder: ["temperature_ladder", "calibrate_remd", "predicted_acceptance"],
        balance: ["backbone_state_labels", "pattern_weights"],
        config: ["flow_size"],
        samples: ["clash_fraction"],
        analysis: ["ess_curve"],
        planning: ["refine_within", "refine_by_backbone_state", "strata_free_energy"],
    }
    for module, names in homes.items():
        for name in names:
            assert getattr(pl, name) is getattr(module, name), name
    assert pl.run_pipeline is run_pipeline and pl.PipelineConfig is PipelineConfig
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pl.nope  # noqa: B018


def test_size_ladder_and_diagnostics_rules():
    from boltzgen.analysis import ess_curve
    from boltzgen.generator.config import flow_size
    from boltzgen.remd_ladder import predicted_acceptance, temperature_ladder
    from boltzgen.samples import clash_fraction

    # the documented examples of the size rule
    assert flow_size(60) == {"n_layers": 8, "hidden": (64, 64), "lr": 5e-4}
    assert flow_size(180) == {"n_layers": 8, "hidden": (128, 128), "lr": 5e-4}
    assert flow_size(906)["n_layers"] == 8 and flow_size(906)["hidden"] == (128, 128)
    with pytest.raises(InputError, match="dimension"):
        flow_size(0)
    # alanine dipeptide: 5 replicas 300-600 K, predicted neighbour acceptance ~0.5
    temps, info = temperature_ladder(System.from_pdb(ADP))
    assert len(temps) == 5 and temps[0] == pytest.approx(300) and temps[-1] == pytest.approx(600)
    assert info["predicted_acceptance"] == pytest.approx(0.50, abs=0.03)
    assert predicted_acceptance(1.0, 60) == pytest.approx(1.0)
    # ESS curve: equal weights keep ESS 1 on every prefix; one huge weight drags it down
    flat = ess_curve(np.zeros(1000))
    assert flat["n"][-1] == 1000 and np.allclose(flat["ess"], 1.0)
    spiky = np.zeros(1000)
    spiky[0] = 50.0
    assert ess_curve(spiky)["ess"][-1] < 0.01

    # clashes: two atoms 3 bonds apart, 0.05 nm apart in one frame of two
    class Atom:
        def __init__(self, i):
            self.index = i

    class Topology:
        n_atoms = 4
        bonds = [(Atom(0), Atom(1)), (Atom(1), Atom(2)), (Atom(2), Atom(3))]

    class Frames:
        positions = np.array([np.eye(4, 3), np.eye(4, 3)])
        reduced_energy = np.array([0.0, np.inf])

    Frames.positions[0, 3] = Frames.positions[0, 0] + 0.05
    c = clash_fraction(Frames, Topology)
    assert c["overlap_fraction"] == 0.5 and c["infinite_energy_fraction"] == 0.5
    assert c["clash_fraction"] == 1.0 and c["n_checked"] == 2


def test_durations_and_budget_split():
    assert parse_duration("90s") == 90 and parse_duration("60m") == 3600
    assert parse_duration("1.5h") == 5400 and parse_duration(" 2 min ") == 120
    for bad in ("60", "m", "-5m", "0s", "5 days"):
        with pytest.raises(InputError, match="duration"):
            parse_duration(bad)
    cfg = PipelineConfig(budget_minutes=10)
    split = budget_split(cfg)
    assert set(split) == {"data", "training", "sampling", "analysis"}
    assert sum(v["seconds"] for v in split.values()) == pytest.approx(600)
    assert split["training"]["share"] == cfg.train_share


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="must be < 1"):
        PipelineConfig(data_share=0.5, train_share=0.5)
    with pytest.raises(ValueError, match="unknown dihedral 'chi9'"):
        PipelineConfig(cvs=["chi9:2"])
    with pytest.raises(ValueError, match="integer PDB residue number"):
        PipelineConfig(cvs=["phi:two"])
    with pytest.raises(ValueError, match="extra"):
        PipelineConfig(budget=5)


def test_cv_names_resolve_per_residue():
    adp = System.from_pdb(ADP)
    assert resolve_cvs(adp, None) == ["phi:2"]
    assert resolve_cvs(adp, ["psi"]) == ["psi:2"]
    assert resolve_cvs(adp, ["phi:2", "phi", "psi:2"]) == ["phi:2", "psi:2"]
    with pytest.raises(InputError, match=r"no dihedral 'phi:5'.*phi:2"):
        resolve_cvs(adp, ["phi:5"])
    # proline's ring pins phi: its residue is reported (and stratified) by psi
    pro = System.from_pdb(ADP.parent / "peptides" / "ace-pro-nme.pdb")
    assert resolve_cvs(pro, None) == ["psi:2"]
    labels, names = backbone_state_labels(pro, pro.positions[None])
    # training data: replica exchange unless metadynamics is asked for
    assert data_sampler() == "remd" and data_sampler("metad") == "metad"
    psi = float(dihedral(pro, "psi")(pro.positions[None])[0])
    assert names == ["psi:2"] and labels[0] == ("+" if psi >= 0 else "-")


def test_stratified_allocation_is_equal_where_draws_allow():
    labels = np.array(["-"] * 900 + ["+"] * 40 + ["x"] * 1)
    idx = stratified_allocation(labels, 200)
    got = dict(zip(*np.unique(labels[idx], return_counts=True), strict=True))
    assert got == {"+": 40, "-": 160}  # "+" gives all it has, "x" (1 draw) none
    assert np.all(np.diff(idx) > 0)
    idx = stratified_allocation(np.array(["a"] * 50 + ["b"] * 50), 40)
    assert np.unique(np.array(["a"] * 50 + ["b"] * 50)[idx], return_counts=True)[1].tolist() == [
        20,
        20,
    ]


def test_pattern_weights_raise_rare_states_and_honour_frame_weights():
    labels = np.array(["-"] * 97 + ["+"] * 3 + ["x"] * 2)  # "x": too few frames to boost
    w, table = pattern_weights(labels, min_share=0.05, min_frames=3)
    share = {r["state"]: r["weight_share"] for r in table}
    assert w.mean() == pytest.approx(1.0)
    assert share["+"] == pytest.approx(0.05) and share["x"] == pytest.approx(2 / 102)
    assert np.ptp(w[:97]) == 0  # equal weights inside a state
    # frames of a biased run: shares are the weighted ones, and inside a state the weights
    # follow the frame weights
    fw = np.ones(102)
    fw[:97] = np.linspace(1.0, 3.0, 97)
    fw[97:100] = 0.01  # "+" holds 3 frames but almost no Boltzmann weight
    w2, table2 = pattern_weights(labels, min_share=0.0, min_frames=3, frame_weights=fw)
    np.testing.assert_allclose(w2 / w2.sum(), fw / fw.sum())
    w3, table3 = pattern_weights(labels, min_share=0.05, min_frames=3, frame_weights=fw)
    share3 = {r["state"]: r["weight_share"] for r in table3}
    assert share3["+"] == pytest.approx(0.05)
    np.testing.assert_allclose(w3[:97] / w3[0], fw[:97] / fw[0])
    with pytest.raises(InputError, match="frame_weights"):
        pattern_weights(labels, frame_weights=np.ones(5))


def test_pattern_weights_keep_the_kish_floor_when_many_rare_states_are_boosted():
    # ten rare states of 100 frames each: 5 % apiece leaves a Kish size of 0.36 of the frames
    labels = np.array(["main"] * 9000 + [f"r{k}" for k in range(10) for _ in range(100)])
    w0, t0 = pattern_weights(labels, min_share=0.05, min_frames=5)
    assert weights_kish(w0) == pytest.approx(0.36, abs=0.01)
    w, table = pattern_weights(labels, min_share=0.05, min_frames=5, min_kish=0.5)
    share = {r["state"]: r["weight_share"] for r in table}
    assert weights_kish(w) == pytest.approx(0.5, abs=1e-3)  # the floor, not far above it
    assert 0.01 < share["r0"] < 0.05  # still raised above the data's 1 %, less than asked
    assert w.mean() == pytest.approx(1.0) and np.ptp(w[:9000]) == 0
    # one rare state (ADP's phi > 0): the floor does not bind, nothing changes
    one = np.array(["-"] * 975 + ["+"] * 25)
    np.testing.assert_array_equal(
        pattern_weights(one, 0.05, 5, min_kish=0.5)[0], pattern_weights(one, 0.05, 5)[0]
    )
    # frame weights of a biased run: the floor is relative to their own Kish size
    fw = np.random.default_rng(0).uniform(0.2, 1.8, len(labels))
    wb, _ = pattern_weights(labels, 0.05, 5, frame_weights=fw, min_kish=0.5)
    assert weights_kish(wb) == pytest.approx(0.5 * weights_kish(fw), abs=1e-3)
    with pytest.raises(InputError, match="min_kish"):
        pattern_weights(labels, min_kish=1.5)


def test_strata_free_energy_combines_strata():
    # two residues; Z of each sign pattern known; dF of residue 0 = -log(Z_+. / Z_-.)
    z = {"++": 0.01, "+-": 0.03, "-+": 0.2, "--": 0.76}
    rows = [{"label": k, "log_z": math.log(v), "log_z_err": 0.1} for k, v in z.items()]
    df0, err0 = strata_free_energy(rows, 0)
    assert df0 == pytest.approx(-math.log(0.04 / 0.96))
    df1, _ = strata_free_energy(rows, 1)
    assert df1 == pytest.approx(-math.log(0.21 / 0.79))
    # relative errors of sums: sqrt(sum (share * rel)^2) per side, added in quadrature
    rel_plus = 0.1 * math.hypot(0.25, 0.75)
    rel_minus = 0.1 * math.hypot(0.2 / 0.96, 0.76 / 0.96)
    assert err0 == pytest.approx(math.hypot(rel_plus, rel_minus))
    df, err = strata_free_energy(rows[2:], 0)  # no stratum with phi >= 0
    assert df == math.inf and err == math.inf
    # every pattern at once: P = Z / sum Z, summing the + patterns of residue 0 gives its dF;
    # the delta-method error against the spread of log Z drawn with the stated errors
    states = strata_state_free_energies(rows)
    assert [k for k in states] == sorted(z)
    for k, v in z.items():
        assert states[k]["population"] == pytest.approx(v)
        assert states[k]["free_energy_kT"] == pytest.approx(-math.log(v))
    plus = states["++"]["population"] + states["+-"]["population"]
    assert math.log((1 - plus) / plus) == pytest.approx(df0)
    rng = np.random.default_rng(0)
    lz = np.log(list(z.values())) + 0.1 * rng.standard_normal((20_000, 4))
    f = -(lz - np.log(np.exp(lz).sum(axis=1, keepdims=True)))
    for j, k in enumerate(z):
        assert states[k]["err_kT"] == pytest.approx(f[:, j].std(), rel=0.05)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "adp"
    seen: list[tuple[float, str]] = []
    summary = run_pipeline(ADP, out, TINY, progress=lambda f, m: seen.append((f, m)))
    return out, summary, seen


def test_tiny_pipeline_writes_readable_results(tiny_run):
    out, s, seen = tiny_run
    assert json.loads((out / "summary.json").read_text())["ess"] == s["ess"]
    report = (out / "report.md").read_text()
    assert "## Free energies" in report and "phi:2" in report and "## Budget" in report
    for fig in ["plots/log_weights.png", "plots/ramachandran_2.png", "plots/fes_phi_2.png"]:
        assert (out / fig).stat().st_size > 1000, fig
        assert fig in report
    t = mdtraj.load(str(out / "samples.h5"))
    assert t.n_atoms == 22 and t.n_frames == s["n_samples"]
    assert mdtraj.load(str(out / "flow_samples.h5")).n_frames == s["sampling"]["n_samples"]
    assert (out / "model.pt").stat().st_size > 0
    # progress is monotone, names its stage, and ends at 1
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    assert {m.split(":")[0] for _, m in seen} >= {"system", "data", "training", "sampling"}
    # refinement ran stratified over the backbone states and reports its cost
    ref = s["refine"]
    assert ref["status"] == "done" and ref["n_energy_evals"] > ref["n_samples"]
    assert {r["label"] for r in ref["strata"]} <= {"+", "-"}
    # what the stages before left unspent goes to the refinement, never beyond the sampling
    # stage's end: planned = the plan's share + the unspent seconds added
    planned = s["sampling"]["plan"]["refine_seconds"]
    assert ref["planned_seconds"] == pytest.approx(planned + ref["unspent_seconds_added"])
    assert ref["unspent_seconds_added"] >= 0.0
    # every backbone sign pattern's population at once (ADP: + and -), beside the data's
    states = s["state_populations"]
    assert states["dihedrals"] == ["phi:2"] and "## Backbone state populations" in report
    assert sum(r["data_population"] for r in states["states"]) == pytest.approx(1.0)
    row = s["free_energies"]["phi:2"]
    assert row["residue"] == 2 and "df_data_kT" in row
    f = {r["state"]: r["free_energy_kT"] for r in states["states"]}
    if None not in f.values() and len(f) == 2 and row["df_kT"] is not None:
        # one dihedral: its dF is F(+) - F(-) of the same strata (the flows' means agree)
        assert f["+"] - f["-"] == pytest.approx(row["df_kT"], abs=1e-9)
        assert sum(math.exp(-v) for v in f.values()) == pytest.approx(
            1.0
        )  # None when the data never left phi < 0
    # two independently trained flows (the default): each number is their mean, with an error
    # no smaller than their spread, and the verdict saw both
    assert len(s["flows"]) == 2 and (out / "checkpoint" / "flow2").is_dir()
    if row["df_kT"] is not None and len(row.get("flows", [])) == 2:
        values = [f["df_kT"] for f in row["flows"]]
        assert row["df_kT"] == pytest.approx(sum(values) / 2)
        assert row["err_kT"] >= abs(values[0] - values[1]) / 2 - 1e-9  # spread sd/sqrt(2)
        assert row["diagnostics"]["consistency"] is not None
    # every number carries a verdict; "not converged" always says why and what to do
    assert row["verdict"] in ("reliable", "not converged")
    assert (row["verdict"] == "reliable") == (not row["reasons"])
    assert bool(row["advice"]) == bool(row["reasons"])
    assert s["verdict"] == row["verdict"]  # one CV: the run's verdict is its verdict
    assert f"**{row['verdict']}**" in report
    if row["verdict"] == "not converged":
        assert all(r in report for r in row["reasons"])
    # which number to quote: the samples' when reliable, else the data's if they pass their
    # own check (two time halves) and are tighter
    rec, check = row["recommended"], row["data_check"]
    assert rec["source"] in ("samples", "data") and "quote / kT" in report
    pick = "df_data_kT" if rec["source"] == "data" else "df_kT"
    assert rec["df_kT"] == pytest.approx(row[pick])
    if row["verdict"] == "reliable":
        assert rec["source"] == "samples"
    if rec["source"] == "data":
        assert check["ok"] and row["err_data_kT"] <= (row["err_kT"] or math.inf)
    # sampler="metad" (TINY): the data came from metadynamics, weighted
    assert s["data"]["sampler"] == "metad" and s["data"]["dihedrals"] == ["phi:2"]
    assert 0.0 < s["data"]["ess"] <= 1.0 and s["data"]["sign_changes"]["phi:2"] > 0
    assert "metadynamics with a frozen bias" in report
    assert 0.0 <= s["clash_fraction"] <= 1.0
    assert set(s["wall_time_s"]) >= {"data", "training", "sampling", "analysis", "total"}
    # time left before the analysis share goes to the weakest stratum; the record says what
    # was available and spent, and every round that added particles strengthened its stratum
    # the console says each thing once: invalid energies are counted per stage (all flows),
    # each batch's details are in run.log
    assert (out / "run.log").exists() and s["files"]["log"] == "run.log"
    assert set(s["invalid_configurations"]) <= {"training", "sampling", "leftover"}
    for v in s["invalid_configurations"].values():
        assert 0 <= v["n_invalid"] <= v["n_evaluated"]
    lo = s["leftover_spent"]
    assert lo["status"] in ("done", "no time left") and lo["seconds"] >= 0.0
    assert all(
        r["n_effective_after"] > r["n_effective_before"] for r in lo["rounds"] if r["n_added"]
    )


def test_cli_run_resumes_from_stage_checkpoints(tiny_run):
    from boltzgen.cli import app

    out, s, _ = tiny_run
    args = [
        "run",
        str(ADP),
        "--out",
        str(out),
        "--budget",
        "36s",
        "--seed",
        "1",
        "--quiet",
        "--sampler",
        "metad",
        "--cores",
        "1",
    ]
    # the CLI's config must equal TINY's for the stages to resume: n_layers etc. differ, so
    # only the data stage (same budget, seed, ladder settings) is reused
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "budget data" in res.output and "dF phi:2 =" in res.output
    assert "configurations invalid" not in res.output  # per-batch details: run.log only
    assert res.output.count("invalid configurations") <= 1
    again = json.loads((out / "summary.json").read_text())
    assert again["stages"]["data"]["resumed"] is True
    bad = CliRunner().invoke(app, ["run", str(ADP), "--budget", "soon", "--out", str(out)])
    assert bad.exit_code == 2 and "duration" in bad.output
    bad = CliRunner().invoke(app, ["run", str(ADP), "--cv", "phi:9", "--out", str(out)])
    assert bad.exit_code == 2 and "no dihedral 'phi:9'" in bad.output


def test_invalid_energy_batches_go_to_the_run_log_not_the_console(tmp_path, capfd):
    """Each batch with invalid configurations is one DEBUG line in the run's log file; the
    console gets at most the one warning per process."""
    import warnings

    from boltzgen.energy import EnergyModel
    from boltzgen.pipeline.run import _log_file

    system = System.alanine_dipeptide()
    energy = EnergyModel(system, platform="Reference")
    x = torch.zeros(4, system.n_atoms, 3, dtype=torch.float64)  # every atom on one point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _log_file(tmp_path / "run.log"):
            for _ in range(3):
                assert torch.isinf(energy(x)).all()
        energy(x)  # after the run: not in its log
    log = (tmp_path / "run.log").read_text()
    assert log.count("configurations invalid") == 3 and "4 of 4" in log
    seen = capfd.readouterr()
    assert "configurations invalid" not in seen.out + seen.err
    assert energy.invalid_summary()["n_invalid"] == 16


def test_pipeline_job_through_the_service(tmp_path):
    from boltzgen.client import Client

    settings = settings_for(tmp_path, executor="local", workers=1)
    with LiveServer(settings) as srv, Client(srv.url, api_key=ADMIN) as client:
        job = client.run(ADP, wait=True, timeout=600, **{**TINY, "sampler": "remd"})
        assert job.status == "succeeded", job
        names = {a.name for a in client.artifacts(job.id)}
        assert {"report.md", "summary.json", "model.pt", "samples.h5"} <= names
        assert "plots/log_weights.png" in names or "log_weights.png" in {
            n.rsplit("/", 1)[-1] for n in names
        }
        summary = json.loads(
            client.download(client.artifact(job.id, "summary.json"), tmp_path).read_text()
        )
        assert summary["free_energies"]["phi:2"]["residue"] == 2
        assert summary["data"]["sampler"] == "remd" and summary["data"]["walkers_at_target"] >= 1
        assert job.result.get("model_id") or client.list_models().items
        t = client.load_trajectory(job.id, "samples.h5")
        assert t.n_atoms == 22


def test_refinement_plan_floor_is_per_state(monkeypatch):
    """With no time to pay for particles the plan still refines what a verdict needs: the
    per-state floor times the states with two draws or more (here 2 of 3), not 100 in all;
    the refinement's time limit then keeps it within the budget."""
    from types import SimpleNamespace

    from boltzgen.refinement import planning

    labels = np.array(["-"] * 900 + ["+"] * 300 + ["x"] * 1)
    monkeypatch.setattr(
        planning, "backbone_state_labels", lambda system, pos: (labels[: len(pos)], ["phi:2"])
    )
    samples = SimpleNamespace(
        positions=np.zeros((len(labels), 1, 3)), log_weights=np.zeros(len(labels))
    )
    plan = planning.plan_refinement(samples, None, 0.0, 1.0)
    assert plan["n_particles"] == 100
    plan = planning.plan_refinement(samples, None, 0.0, 1.0, min_per_stratum=100)
    assert plan["n_particles"] == 200
    plan = planning.plan_refinement(samples, None, 1e9, 1.0, min_per_stratum=100)
    assert plan["n_particles"] == len(labels)  # time for all

    # every refine_within caller (pipeline, demo, `boltzgen sample --refine-seconds`, the
    # sample job) gets the verdict's floor unless it asks otherwise
    import inspect

    from boltzgen.diagnostics import MIN_PARTICLES_PER_STRATUM

    default = inspect.signature(planning.refine_within).parameters["min_per_stratum"].default
    assert default == MIN_PARTICLES_PER_STRATUM


def test_run_log_keeps_each_threads_records(tmp_path):
    """Two pipelines in one process (threads) each write only their own records to run.log."""
    import logging
    import threading

    from boltzgen.pipeline.run import _log_file

    both = threading.Barrier(2)

    def one(name: str) -> None:
        with _log_file(tmp_path / f"{name}.log"):
            both.wait()
            logging.getLogger("boltzgen.test").debug("record of %s", name)
            both.wait()

    threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, other in (("a", "b"), ("b", "a")):
        text = (tmp_path / f"{name}.log").read_text()
        assert f"record of {name}" in text and f"record of {other}" not in text


def test_data_stage_keeps_up_to_the_frame_cap():
    """Long budgets keep frames closer together (0.4 ps beat 1.6 ps on ADP), up to the cap;
    short ones still keep one frame per exchange interval; memory caps large molecules."""
    from boltzgen.pipeline.data import MAX_FRAMES, _remd_steps, frame_cap

    assert frame_cap(22) == MAX_FRAMES
    assert frame_cap(5000) == int(2.5e8 // (24 * 5000))  # 2,083 frames: 250 MB
    cal = {"steps_per_second": 19_000.0, "setup_seconds": 0.0}
    _, prod, report = _remd_steps(cal, 1080.0, 1080.0, 22, 5)  # the one-hour ADP data stage
    assert report % 100 == 0 and prod // report <= MAX_FRAMES
    assert prod // report > 50_000  # was 18,000 at the old 20,000-frame cap
    _, prod, report = _remd_steps(cal, 60.0, 60.0, 22, 5)
    assert report == 100  # short: every exchange interval, as before


def test_independent_flows_train_side_by_side_on_enough_cores(tmp_path, monkeypatch):
    """With as many cores as flows, flow 2 trains in a worker process while flow 1 trains
    here: each gets the whole training share (not half of it), and both trained at once
    (their training windows overlap). Flow 2's model is the worker's, not a retrained one."""
    import json

    from boltzgen import cores

    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    s = run_pipeline(System.alanine_dipeptide(), tmp_path, {**TINY, "cores": 2, "n_flows": 2})
    share = s["budget"]["split"]["training"]["seconds"]
    recs = [
        json.loads(p.read_text())["training"]["result"]
        for p in (
            tmp_path / "checkpoint" / "pipeline_stages.json",
            tmp_path / "checkpoint" / "flow2" / "pipeline_stages.json",
        )
    ]
    for rec in recs:
        assert rec["time_limit_s"] >= share, (rec["time_limit_s"], share)
        assert rec["finish"]["trigger"] in ("schedule", "early_stopping"), rec  # it finished
    assert s["flow"]["parallel"] is True and s["stages"]["training"]["resumed"] is False
    assert len(s["flows"]) == 2 and all(f["epochs_run"] >= 1 for f in s["flows"])
    mix = s["flows_mixture"]  # both flows' draws as one proposal
    assert mix["n_flows"] == 2
    assert mix["n_samples"] == sum(min(f["n_samples"], 10_000) for f in s["flows"])
    assert 0 < mix["flow_ess"] <= 1 and len(mix["flow_ess_each"]) == 2
    # each ESS comes with its k-hat (a heavy tail hides from a Kish ESS; inf is written null)
    assert all("flow_k_hat" in f for f in s["flows"]) and "flow_k_hat" in mix
    assert "weighed as one sample of their mixture" in (tmp_path / "report.md").read_text()
    # the two trainings overlapped: one after the other, each would run to its time limit
    assert all(r["stop_reason"] == "time_limit" for r in recs), recs
    limits = sum(r["time_limit_s"] for r in recs)
    assert s["wall_time_s"]["training"] < limits, (s["wall_time_s"], limits)


def test_a_failed_training_worker_is_reported_not_raised():
    """A worker that fails says why; the pipeline then trains that flow itself."""
    from boltzgen.pipeline.parallel_training import ParallelTraining

    pt = ParallelTraining({1: ({"format": "nonsense"}, None, {}, None, "", None, None, None, 0.0)})
    try:
        error = pt.wait(1)
        assert error is not None and "Error" in error, error
        assert pt.wait(2) == "flow 3 had no worker"
    finally:
        pt.close()
