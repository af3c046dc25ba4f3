"""The ``cores`` setting and replica exchange over worker processes (tiny runs, ADP vacuum).

Parallel REMD is bitwise the serial run on the CPU platform (every Context has its own random
stream); on Reference, whose integrators share one random stream per process, it samples the
same ensemble, which is tested statistically.
"""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from boltzgen import cores
from boltzgen.cores import available_cores, contiguous_groups, resolve_cores, torch_threads
from boltzgen.enhanced import replica_exchange
from boltzgen.errors import InputError, JobParamsError, ReplicaWorkerError
from boltzgen.jobs.kinds.pipeline import job_cores
from boltzgen.jobs.registry import validate_params
from boltzgen.openmm_context import available_platforms
from boltzgen.pipeline.config import PipelineConfig, make_config
from boltzgen.replica_pool import ReplicaPool
from boltzgen.simulation import LangevinConfig
from boltzgen.systems import System

torch.set_num_threads(1)

LADDER = [300.0, 330.0, 365.0, 400.0]


@pytest.fixture(scope="module")
def adp():
    return System.alanine_dipeptide()


# ------------------------------------------------------------------ the setting
def test_cores_default_to_the_affinity_and_are_capped_by_it(monkeypatch):
    assert available_cores() == len(os.sched_getaffinity(0))
    assert resolve_cores(None) == available_cores()
    monkeypatch.setattr(cores, "available_cores", lambda: 4)
    assert resolve_cores(None) == 4
    assert resolve_cores(1) == 1 and resolve_cores(3) == 3
    assert resolve_cores(16) == 4  # more processes than cores only slow each other down


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_cores_below_one_or_not_an_integer_is_a_typed_error(bad):
    with pytest.raises(InputError, match="cores must be an integer >= 1"):
        resolve_cores(bad)


def test_contiguous_groups_balance_the_replicas():
    assert contiguous_groups(5, 2) == [[0, 1], [2, 3, 4]]
    assert contiguous_groups(6, 4) == [[0], [1], [2, 3], [4, 5]]
    assert contiguous_groups(2, 5) == [[0], [1]]
    assert contiguous_groups(3, 1) == [[0, 1, 2]]
    with pytest.raises(InputError):
        contiguous_groups(3, 0)


def test_torch_threads_are_restored_after_the_block():
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_pipeline_config_and_job_accept_cores(monkeypatch):
    assert PipelineConfig().cores is None
    assert PipelineConfig(cores=2).cores == 2
    with pytest.raises(InputError, match="cores"):
        make_config({"cores": 0})
    params = validate_params("pipeline", {"system": {"pdb": "x"}, "cores": 1})
    assert params.cores == 1 and job_cores(params) == 1
    with pytest.raises(JobParamsError, match="cores"):
        validate_params("pipeline", {"system": {"pdb": "x"}, "cores": 0})
    # unset: the executor's share per job, else every core
    unset = validate_params("pipeline", {"system": {"pdb": "x"}})
    monkeypatch.setattr(cores, "available_cores", lambda: 8)
    monkeypatch.setenv("BOLTZGEN_JOB_THREADS", "3")
    assert job_cores(unset) == 3
    monkeypatch.delenv("BOLTZGEN_JOB_THREADS")
    assert job_cores(unset) == 8


def test_cli_run_parses_cores_and_threads(monkeypatch, tmp_path):
    import boltzgen.cli.run as cli_run
    from boltzgen.cli import app
    from boltzgen.paths import data_file

    seen = {}

    def fake_run(pdb, out, config, quiet):
        seen.update(cores=config.cores, threads=torch.get_num_threads())
        raise InputError("stop here")  # the CLI prints it and exits 2

    monkeypatch.setattr(cli_run, "_run", fake_run)
    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    pdb = str(data_file("alanine-dipeptide.pdb"))
    res = CliRunner().invoke(app, ["run", pdb, "--out", str(tmp_path), "--cores", "2"])
    assert res.exit_code == 2 and "stop here" in res.output, res.output
    assert seen == {"cores": 2, "threads": 1} and "2 cores" in res.output
    res = CliRunner().invoke(app, ["run", pdb, "--out", str(tmp_path), "--threads", "2"])
    assert seen == {"cores": None, "threads": 2}, res.output
    assert torch.get_num_threads() == 1  # restored
    res = CliRunner().invoke(app, ["run", pdb, "--out", str(tmp_path), "--cores", "0"])
    assert res.exit_code == 2 and "--cores" in res.output


# ------------------------------------------------------------------ REMD over processes
def _remd(adp, platform: str, n_workers: int, seed: int = 3, **kw):
    args = dict(n_steps=600, exchange_interval=50, report_interval=100, n_equilibration=100)
    args.update(kw)
    lang = LangevinConfig(platform=platform, seed=seed, threads=1)
    return replica_exchange(adp, LADDER, langevin=lang, n_workers=n_workers, **args)


@pytest.mark.skipif("CPU" not in available_platforms(), reason="no OpenMM CPU platform")
def test_parallel_remd_is_bitwise_the_serial_run_on_the_cpu_platform(adp):
    serial = _remd(adp, "CPU", 1)
    assert serial.settings["n_workers"] == 1
    assert (serial.n_attempts > 0).all() and np.nansum(serial.acceptance) > 0  # swaps happen
    for k in (2, 3):
        par = _remd(adp, "CPU", k)
        assert par.settings["n_workers"] == k
        np.testing.assert_array_equal(par.trajectory.xyz, serial.trajectory.xyz)
        np.testing.assert_array_equal(par.potential_energy, serial.potential_energy)
        np.testing.assert_array_equal(par.forces, serial.forces)
        np.testing.assert_array_equal(par.replica_of_frame, serial.replica_of_frame)
        np.testing.assert_array_equal(par.acceptance, serial.acceptance)
    assert not mp.active_children()  # the workers ended with the run


def _block_se(x: np.ndarray, n_blocks: int = 10) -> float:
    means = np.array([b.mean() for b in np.array_split(x, n_blocks)])
    return float(means.std(ddof=1) / np.sqrt(n_blocks))


def test_parallel_remd_samples_the_serial_ensemble_on_reference(adp):
    """Reference draws all replicas' noise from one stream per process, so the runs differ in
    detail; the target replica's energies and the swap rates must agree within their errors."""
    kw = dict(n_steps=20_000, report_interval=100, n_equilibration=1000)
    serial = _remd(adp, "Reference", 1, seed=11, **kw)
    par = _remd(adp, "Reference", 2, seed=11, **kw)
    assert par.settings["platform"] == "Reference" and par.settings["n_workers"] == 2
    assert not np.array_equal(par.potential_energy, serial.potential_energy)
    u1, u2 = serial.potential_energy, par.potential_energy
    se = np.hypot(_block_se(u1), _block_se(u2))
    assert abs(u1.mean() - u2.mean()) < 4 * se + 0.5, (u1.mean(), u2.mean(), se)
    # every neighbour pair swaps at the same rate (binomial error over the attempts)
    p = 0.5 * (serial.acceptance + par.acceptance)
    err = np.sqrt(p * (1 - p) * 2 / serial.n_attempts)
    assert (np.abs(serial.acceptance - par.acceptance) < 5 * err + 0.05).all()
    # and the walkers mix in both: each run sees more than one walker at 300 K
    assert len(np.unique(par.replica_of_frame)) > 1


def test_a_failing_or_dead_worker_raises_instead_of_hanging(adp):
    temps = np.array(LADDER)
    cfg = LangevinConfig(platform="Reference")
    with ReplicaPool(adp, temps, cfg, [[0, 1], [2, 3]]) as pool:
        pool.start(None)
        u, x, v = pool.step(10)
        assert u.shape == (4,) and x.shape == (4, adp.n_atoms, 3) and v.shape == x.shape
        pool.set(3, x[2][:5], v[2][:5])  # the wrong number of atoms, in the worker
        with pytest.raises(ReplicaWorkerError, match="replica worker 1 failed"):
            pool.step(10)
    with ReplicaPool(adp, temps, cfg, [[0, 1], [2, 3]]) as pool:
        pool.start(None)
        proc = mp.active_children()[0]
        proc.kill()
        proc.join()
        with pytest.raises(ReplicaWorkerError, match="died"):
            pool.step(10)
    assert not mp.active_children()


def test_remd_rejects_a_bad_worker_count(adp):
    with pytest.raises(InputError, match="n_workers"):
        _remd(adp, "Reference", 0)


# ------------------------------------------------------------------ the pipeline's choices
def test_the_data_stage_keeps_the_faster_number_of_remd_processes(monkeypatch):
    from boltzgen.pipeline import data

    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    rates = {1: 100.0, 2: 300.0}

    def fake_calibration(system, temps, *, seconds, langevin, n_workers):
        setup = 0.5 if n_workers > 1 else 0.0
        return {"steps_per_second": rates[n_workers], "setup_seconds": setup}

    monkeypatch.setattr(data, "calibrate_remd", fake_calibration)
    temps = np.array(LADDER + [440.0])

    def choose(config):
        return data._fastest_remd(None, temps, config, 60.0, lambda *a: None)

    cal, k, lang, tried = choose(PipelineConfig())
    assert (k, lang.threads, cal["steps_per_second"]) == (2, 1, 300.0) and set(tried) == {"1", "2"}
    rates = {1: 300.0, 2: 100.0}  # a busy machine: the lock-step processes lose
    cal, k, lang, tried = choose(PipelineConfig())
    assert (k, lang.threads) == (1, 2)  # one process; the CPU platform gets both threads
    cal, k, lang, tried = choose(PipelineConfig(cores=1))
    assert (k, lang.threads) == (1, 1) and set(tried) == {"1"}


def test_the_energy_model_keeps_one_of_its_two_candidates(adp, monkeypatch):
    from boltzgen.pipeline.training import energy_model

    monkeypatch.setattr(cores, "available_cores", lambda: 2)
    assert energy_model(adp, PipelineConfig(cores=1)).n_workers == 1
    model = energy_model(adp, PipelineConfig(cores=2))
    assert model.n_workers in (1, 2)
    assert len(mp.active_children()) == model.n_workers - 1  # the other one's workers ended
    u = model(torch.as_tensor(adp.positions[None].repeat(3, axis=0)))
    assert u.shape == (3,) and torch.isfinite(u).all()
    model.close()
