"""boltzgen.md: Langevin MD files (mdtraj HDF5 + energies + forces), load_md, CLI."""

from __future__ import annotations

import mdtraj
import numpy as np
import pytest
from typer.testing import CliRunner

from boltzgen.cli import app
from boltzgen.energy import EnergyModel
from boltzgen.errors import InputError
from boltzgen.md import load_md, simulate
from boltzgen.systems import System


@pytest.fixture(scope="module")
def vac() -> System:
    return System.alanine_dipeptide()


@pytest.mark.parametrize("solvent", ["vacuum", "obc2"])
def test_simulate_file_opens_and_energies_match(tmp_path, solvent):
    system = System.alanine_dipeptide(solvent=solvent)
    out = tmp_path / "md.h5"
    traj = simulate(
        system, 600, timestep=0.001, report_interval=50, out=out, seed=3, platform="Reference"
    )
    assert traj.n_frames == 12
    loaded = mdtraj.load(str(out))
    assert loaded.n_frames == 12 and loaded.n_atoms == 22
    np.testing.assert_array_equal(loaded.xyz, traj.xyz)
    np.testing.assert_allclose(loaded.time, 0.05 * np.arange(1, 13), rtol=1e-6)

    data = load_md(out)
    assert data.forces.shape == (12, 22, 3) and data.forces.dtype == np.float32
    assert data.metadata["seed"] == 3 and data.metadata["timestep_ps"] == 0.001
    assert data.system().solvent == solvent
    with EnergyModel(system, platform="Reference") as model:
        u, f = model.energy_and_forces(data.trajectory.xyz.astype(np.float64))
    # stored values were computed at float64 positions; frames are stored as float32
    np.testing.assert_allclose(u * system.kT, data.potential_energy, rtol=1e-5, atol=2e-3)
    scale = np.abs(data.forces).max()
    assert np.abs(f - data.forces).max() < 1e-4 * scale
    # a real trajectory: energies and positions vary between frames
    assert np.ptp(data.potential_energy) > 1.0 and np.ptp(traj.xyz[:, 0, 0]) > 1e-3
    # frames are stored centred (energies above were compared on the centred frames)
    np.testing.assert_allclose(traj.xyz.mean(axis=1), 0.0, atol=1e-5)


def test_seed_reproducible_and_distinct(vac):
    kw = dict(n_steps=300, timestep=0.001, report_interval=100, platform="Reference")
    a = simulate(vac, seed=0, **kw)
    b = simulate(vac, seed=0, **kw)
    c = simulate(vac, seed=1, **kw)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert np.abs(a.xyz - c.xyz).max() > 1e-4


def test_progress_and_bad_arguments(vac):
    seen = []
    simulate(
        vac,
        200,
        report_interval=100,
        platform="Reference",
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1] == (200, 200) and len(seen) >= 2
    with pytest.raises(InputError):
        simulate(vac, 10, report_interval=0)
    with pytest.raises(InputError):
        simulate(vac, 10, timestep=-1.0)
    with pytest.raises(InputError, match="does not exist"):
        load_md("/no/such/md.h5")


def test_cli_simulate(tmp_path):
    out = tmp_path / "cli.h5"
    args = ["simulate", "--steps", "200", "--interval", "50", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--platform", "Reference", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 frames" in result.output
    assert load_md(out).trajectory.n_frames == 4
    bad = CliRunner().invoke(app, [*args, "--solvent", "water"])
    assert bad.exit_code == 2 and "unknown solvent" in bad.output


def test_shipped_md_data_set_is_consistent():
    from boltzgen.paths import data_file

    data = load_md(data_file("adp-vacuum-300K.h5"))
    assert data.trajectory.n_frames == 25_000 and data.forces.shape == (25_000, 22, 3)
    assert data.metadata["timestep_ps"] == 0.001 and data.metadata["report_interval_steps"] == 800
    system = data.system()
    idx = np.random.default_rng(0).choice(25_000, 16, replace=False)
    with EnergyModel(system, platform="Reference") as model:
        u, f = model.energy_and_forces(data.trajectory.xyz[idx].astype(np.float64))
    assert data.metadata["centered"]
    np.testing.assert_allclose(u * system.kT, data.potential_energy[idx], rtol=1e-5, atol=2e-3)
    assert np.abs(f - data.forces[idx]).max() < 1e-4 * np.abs(data.forces[idx]).max()


def test_concatenate_md_joins_sets_of_one_system_and_refuses_mixtures():
    from boltzgen.errors import StructureError
    from boltzgen.md import concatenate_md
    from boltzgen.paths import data_file

    remd = load_md(data_file("adp-vacuum-remd.h5"))
    plain = load_md(data_file("adp-vacuum-300K.h5"))
    both = concatenate_md([remd, plain])
    assert both.trajectory.n_frames == remd.trajectory.n_frames + plain.trajectory.n_frames
    assert both.forces.shape == (both.trajectory.n_frames, 22, 3)
    np.testing.assert_array_equal(both.potential_energy[-5:], plain.potential_energy[-5:])
    np.testing.assert_array_equal(both.trajectory.xyz[:3], remd.trajectory.xyz[:3])
    assert both.metadata["temperature_K"] == 300.0 and len(both.metadata["sources"]) == 2
    assert both.system().solvent == "vacuum"
    hot = load_md(data_file("adp-vacuum-300K.h5"))
    hot.metadata = {**hot.metadata, "temperature_K": 400.0}
    with pytest.raises(StructureError, match="different temperatures"):
        concatenate_md([remd, hot])
    other = load_md(data_file("adp-vacuum-300K.h5"))
    other.system_spec = {**other.system_spec, "solvent": "obc2"}
    with pytest.raises(StructureError, match="different system"):
        concatenate_md([remd, other])
    with pytest.raises(InputError):
        concatenate_md([])


@pytest.mark.parametrize("solvent", ["vacuum", "obc2"])
def test_simulate_auto_platform_is_the_generators_fastest_platform(tmp_path, solvent):
    from boltzgen.openmm_context import fastest_platform

    system = System.alanine_dipeptide(solvent=solvent)
    out = tmp_path / "auto.h5"
    simulate(system, 20, timestep=0.001, report_interval=10, out=out, minimize=False)
    assert load_md(out).metadata["platform"] == fastest_platform(system)
    if solvent == "vacuum":
        assert load_md(out).metadata["platform"] == "Reference"  # ~3x faster than CPU here


def test_load_md_names_files_that_are_not_md(tmp_path):
    import tables

    from boltzgen.errors import StructureError
    from boltzgen.md import load_md

    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StructureError, match="not an HDF5 file"):
        load_md(tmp_path / "text.h5")
    with tables.open_file(str(tmp_path / "other.h5"), "w") as h:
        h.create_array("/", "a", obj=[1, 2])
    with pytest.raises(StructureError, match="not an mdtraj HDF5 trajectory"):
        load_md(tmp_path / "other.h5")


# ------------------------------------------------------------------ the one MD driver
def test_langevin_config_validates_and_matches_the_keywords(vac, tmp_path):
    from boltzgen.simulation import LangevinConfig

    for bad in ({"timestep": 0.0}, {"friction": -1.0}, {"temperature": 0.0}, {"threads": 0},
                {"seed": 1.5}, {"platform": ""}):  # fmt: skip
        with pytest.raises(InputError):
            LangevinConfig(**bad)
    kw = dict(n_steps=300, report_interval=100)
    cfg = LangevinConfig(timestep=0.0015, friction=2.0, seed=7, platform="Reference")
    a = simulate(vac, langevin=cfg, out=tmp_path / "a.h5", **kw)
    b = simulate(vac, timestep=0.0015, friction=2.0, seed=7, platform="Reference", **kw)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    meta = load_md(tmp_path / "a.h5").metadata
    assert meta["timestep_ps"] == 0.0015 and meta["friction_per_ps"] == 2.0 and meta["seed"] == 7
    with pytest.raises(InputError, match="not both"):
        simulate(vac, langevin=cfg, seed=1, **kw)
    hot = simulate(vac, langevin=cfg.replace(temperature=500.0), out=tmp_path / "h.h5", **kw)
    assert load_md(tmp_path / "h.h5").metadata["temperature_K"] == 500.0 and hot.n_frames == 3


def test_run_in_chunks_reports_progress_and_stops_at_the_deadline():
    import time

    from boltzgen.simulation import run_in_chunks

    steps, reports, seen = [], [], []
    done = run_in_chunks(
        steps.append, 250, 100, report=reports.append,
        progress=lambda d, t: seen.append((d, t)), done_before=50, total=400,
    )  # fmt: skip
    assert done == 250 and steps == [100, 100, 50] and reports == [0, 1, 2]
    assert seen == [(150, 400), (250, 400), (300, 400)]
    # past the deadline only the guaranteed chunks run
    steps.clear()
    done = run_in_chunks(steps.append, 1000, 10, deadline=time.perf_counter() - 1, min_chunks=2)
    assert done == 20 and steps == [10, 10]


def test_frames_written_in_several_flushes_read_back_whole(vac, tmp_path):
    out = tmp_path / "f.h5"
    traj = simulate(vac, 700, timestep=0.001, report_interval=50, out=out, flush_every=4,
                    platform="Reference")  # fmt: skip
    data = load_md(out)
    assert traj.n_frames == data.trajectory.n_frames == 14 and data.forces.shape == (14, 22, 3)
    np.testing.assert_array_equal(data.trajectory.xyz, traj.xyz)
    np.testing.assert_allclose(data.time, traj.time, rtol=1e-6)
    assert mdtraj.load(str(out)).n_frames == 14
