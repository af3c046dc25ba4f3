"""boltzgen.energy: exact agreement with OpenMM, gradients, workers, invalid input."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from boltzgen.energy import (
    INVALID_MESSAGE,
    EnergyModel,
    InvalidConfigurationWarning,
    select_platform,
)
from boltzgen.errors import EnergyWorkerError, InputError, PlatformError, ShapeError
from boltzgen.systems import System


def _batch(system: System, n: int, seed: int = 0, scale: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(system.positions)
    return x0 + scale * torch.randn(n, *x0.shape, generator=g, dtype=torch.float64)


def _direct_openmm(pdb_path, solvent_file, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energies/forces from a Context built by hand (independent of boltzgen.systems)."""
    pdb = app.PDBFile(str(pdb_path))
    files = ["amber99sbildn.xml"] + ([solvent_file] if solvent_file else [])
    sys_ = app.ForceField(*files).createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None, removeCMMotion=False
    )
    ctx = openmm.Context(
        sys_, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    es, fs = [], []
    for xi in x:
        ctx.setPositions([openmm.Vec3(*r) for r in xi.tolist()] * unit.nanometer)
        st = ctx.getState(getEnergy=True, getForces=True)
        es.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        fs.append(
            st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        )
    return np.array(es), np.array(fs)


@pytest.fixture(scope="module")
def vac() -> System:
    return System.alanine_dipeptide()


@pytest.fixture(scope="module")
def model(vac) -> EnergyModel:
    with EnergyModel(vac, platform="Reference") as m:
        yield m


@pytest.fixture(scope="module")
def pool(vac) -> EnergyModel:
    with EnergyModel(vac, platform="Reference", n_workers=2) as m:
        yield m


@pytest.mark.parametrize("solvent,file", [("vacuum", None), ("obc2", "implicit/obc2.xml")])
def test_energies_match_direct_openmm(adp_pdb, solvent, file):
    system = System.from_pdb(adp_pdb, solvent=solvent)
    x = _batch(system, 6, seed=1)
    e_ref, f_ref = _direct_openmm(adp_pdb, file, x.numpy())
    with EnergyModel(system, platform="Reference") as m:
        u, f = m.energy_and_forces(x)
    assert u.dtype == torch.float64 and u.shape == (6,)
    np.testing.assert_allclose(u.numpy() * system.kT, e_ref, rtol=1e-6)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-6, atol=1e-6)
    # the energies differ between configurations (not one value broadcast)
    assert np.ptp(e_ref) > 1.0


def test_forces_are_minus_finite_difference_gradient(model, vac):
    x = _batch(vac, 1, seed=2)[0].numpy()
    _, f = model.energy_and_forces(x[None])
    h = 1e-5
    rng = np.random.default_rng(0)
    for atom, k in zip(rng.choice(22, 8, replace=False), rng.integers(0, 3, 8), strict=True):
        xp, xm = x.copy(), x.copy()
        xp[atom, k] += h
        xm[atom, k] -= h
        ep, em = model.energies_kj(np.stack([xp, xm]))
        fd = -(ep - em) / (2 * h)
        assert f[0, atom, k] == pytest.approx(fd, rel=1e-4, abs=1e-3)


def test_autograd_gradient_is_minus_force_over_kT(model, vac):
    x = _batch(vac, 3, seed=3).requires_grad_(True)
    u = model(x)
    (w := torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    (u * w).sum().backward()
    _, f = model.energy_and_forces(x.detach())
    torch.testing.assert_close(x.grad, -w[:, None, None] * f / vac.kT)
    assert torch.autograd.gradcheck(
        model, (_batch(vac, 1, seed=4).requires_grad_(True),), eps=1e-6, atol=1e-4, rtol=1e-4
    )


def test_float32_in_float32_out(model, vac):
    x64 = _batch(vac, 4, seed=5)
    x32 = x64.float().requires_grad_(True)
    u32 = model(x32)
    assert u32.dtype == torch.float32
    u32.sum().backward()
    assert x32.grad.dtype == torch.float32
    u64 = model(x32.detach().double())
    torch.testing.assert_close(u32.double(), u64, rtol=1e-6, atol=0)


def test_no_value_cache_inplace_change_is_seen(model, vac):
    x = _batch(vac, 2, seed=6)
    u1 = model(x).clone()
    x[0, 0, 0] += 0.05
    u2 = model(x)
    assert u2[0] != u1[0] and u2[1] == u1[1]


def test_nan_gives_inf_with_zero_grad_and_counts(vac):
    m = EnergyModel(vac, platform="Reference")
    x = _batch(vac, 3, seed=7)
    x[1, 5, 2] = float("nan")
    x.requires_grad_(True)
    with pytest.warns(InvalidConfigurationWarning, match="configurations invalid"):
        u = m(x)
    assert torch.isinf(u[1]) and u[1] > 0 and torch.isfinite(u[[0, 2]]).all()
    u.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all() and (x.grad[0] != 0).any()
    assert m.n_invalid == 1 and m.invalid_counts["nonfinite_input"] == 1


def test_overlapping_atoms_give_inf(vac):
    m = EnergyModel(vac, platform="Reference")
    x = _batch(vac, 2, seed=8)
    x[0, 3] = x[0, 10] + 0.001
    with pytest.warns(InvalidConfigurationWarning, match="configurations invalid"):
        u, f = m.energy_and_forces(x)
    assert u[0] == float("inf") and torch.isfinite(u[1]) and (f[0] == 0).all()
    assert m.invalid_counts["overlap"] == 1


def test_shapes_and_types(model):
    for bad in (
        torch.zeros(22, 3),
        torch.zeros(2, 21, 3),
        torch.zeros(2, 22, 2),
        torch.zeros(2, 66),
    ):
        with pytest.raises(ShapeError, match=r"\(B, 22, 3\)"):
            model(bad.double())
    with pytest.raises(InputError, match="floating"):
        model(torch.zeros(1, 22, 3, dtype=torch.int64))
    assert model(torch.zeros(0, 22, 3)).shape == (0,)


def test_select_platform_logic():
    assert select_platform("auto", ["Reference", "CPU", "CUDA", "OpenCL"]) == "CUDA"
    assert select_platform("auto", ["Reference", "CPU", "OpenCL"]) == "CPU"
    assert select_platform("auto", ["Reference"]) == "Reference"
    assert select_platform("reference", ["Reference", "CPU", "CUDA"]) == "Reference"
    assert select_platform("OpenCL", ["Reference", "OpenCL"]) == "OpenCL"
    with pytest.raises(PlatformError, match="'CUDA' is not available"):
        select_platform("CUDA", ["Reference", "CPU"])
    with pytest.raises(PlatformError, match="none of the preferred"):
        select_platform("auto", ["OpenCL"])
    assert select_platform() in {"CUDA", "CPU", "Reference"}


@pytest.mark.timeout(120)
def test_two_workers_preserve_order(model, pool, vac):
    x = _batch(vac, 101, seed=9)
    perm = torch.randperm(101, generator=torch.Generator().manual_seed(0))
    u1, f1 = model.energy_and_forces(x)
    u2, f2 = pool.energy_and_forces(x[perm])
    assert len(pool.worker_pids) == 1  # plus this process
    torch.testing.assert_close(u2, u1[perm], rtol=0, atol=0)
    torch.testing.assert_close(f2, f1[perm], rtol=0, atol=0)
    # invalid frames are flagged by workers too, at the right index
    x[perm[17], 2] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InvalidConfigurationWarning)
        u3 = pool(x[perm])
    assert torch.isinf(u3[17]) and torch.isfinite(torch.cat([u3[:17], u3[18:]])).all()
    assert pool.n_invalid == 1


@pytest.mark.timeout(120)
def test_killed_worker_raises_instead_of_hanging(vac):
    system = System.alanine_dipeptide(solvent="obc2")  # slower: a batch takes seconds
    with EnergyModel(system, platform="Reference", n_workers=2) as m:
        m(_batch(system, 4))  # start the pool
        victim = m.worker_pids[0]
        timer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(EnergyWorkerError, match=rf"pid {victim}\) died"):
                m(_batch(system, 4_000, seed=10))
        finally:
            timer.cancel()
        assert time.monotonic() - t0 < 60
        assert m.worker_pids == []  # pool shut down, nothing stale left behind
        # the next call restarts the pool and gives correct values
        x = _batch(system, 5, seed=11)
        with EnergyModel(system, platform="Reference") as ref:
            torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)


def test_nonfinite_openmm_energy_gives_inf():
    system = System.alanine_dipeptide()
    nan_force = openmm.CustomExternalForce("sqrt(x - 0.2)")  # NaN when atom 0 has x < 0.2 nm
    nan_force.addParticle(0, [])
    system.openmm_system.addForce(nan_force)
    x = _batch(system, 2, seed=12)
    x[1] -= x[1, 0] - torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64)  # atom 0 at x = 0.1
    x[0] += 0.2 - x[0, 0, 0] + 0.05  # atom 0 at x = 0.25
    m = EnergyModel(system, platform="Reference")
    x.requires_grad_(True)
    with pytest.warns(InvalidConfigurationWarning, match="configurations invalid"):
        u = m(x)
    assert torch.isfinite(u[0]) and u[1] == float("inf")
    u.sum().backward()
    assert (x.grad[1] == 0).all() and torch.isfinite(x.grad).all()
    assert m.invalid_counts == {"nonfinite_input": 0, "overlap": 0, "nonfinite_energy": 1}


@pytest.mark.timeout(120)
def test_batch_timeout_raises_and_pool_recovers(vac):
    with EnergyModel(vac, platform="Reference", n_workers=2, timeout=0.05) as m:
        m(_batch(vac, 4))  # pool start is not part of the batch timeout
        with pytest.raises(EnergyWorkerError, match="within 0.05 s"):
            m(_batch(vac, 50_000, scale=0.001))
        assert m.worker_pids == []
        x = _batch(vac, 3, seed=13)
        with EnergyModel(vac, platform="Reference") as ref:
            torch.testing.assert_close(m(x), ref(x), rtol=0, atol=0)


def test_fast_swig_loop_equals_public_api_loop(vac):
    from boltzgen import energy_worker as w

    ev = w.Evaluator(vac.serialize_openmm(), "Reference", {})
    assert ev.raw  # this OpenMM exposes the SWIG calls and they agree with the public API
    x = np.ascontiguousarray(_batch(vac, 6, seed=14).numpy())
    x[2, 0] = np.nan
    x[4, 1] = x[4, 2]
    for forces in (True, False):
        s_raw, e_raw, f_raw = ev(x.copy(), forces)
        ev.raw = False
        s_pub, e_pub, f_pub = ev(x.copy(), forces)
        ev.raw = True
        np.testing.assert_array_equal(s_raw, s_pub)
        np.testing.assert_array_equal(e_raw, e_pub)
        assert list(s_raw) == [0, 0, w.NONFINITE_INPUT, 0, w.OVERLAP, 0]
        if forces:
            np.testing.assert_array_equal(f_raw, f_pub)
        else:
            assert f_raw is None and f_pub is None


def test_fastest_platform_prefers_reference_for_small_vacuum_systems():
    from boltzgen.energy import fastest_platform

    vac = System.alanine_dipeptide()
    assert fastest_platform(vac) == "Reference"
    assert fastest_platform(vac, "CPU") == "CPU"  # an explicit choice is honoured
    obc = System.alanine_dipeptide(solvent="obc2")
    assert fastest_platform(obc) == select_platform("auto")


def test_make_context_platform_choice_threads_and_seed(vac):
    from boltzgen.openmm_context import (
        available_platforms,
        fastest_platform,
        langevin_integrator,
        make_context,
        openmm_seed,
    )

    # a boltzgen System: "auto" is the generator's choice; the Context owns a copy of the system
    ctx = make_context(vac)
    assert ctx.getPlatform().getName() == fastest_platform(vac) == "Reference"
    assert ctx.getSystem() is not vac.openmm_system
    assert isinstance(ctx.getIntegrator(), openmm.VerletIntegrator)
    # a bare OpenMM system or its XML carries no solvent label: CUDA > CPU > Reference
    for raw in (vac.openmm_system, vac.serialize_openmm()):
        assert make_context(raw).getPlatform().getName() == select_platform("auto")
    if "CPU" in available_platforms():
        cpu = make_context(vac, platform="cpu", threads=2)
        assert cpu.getPlatform().getPropertyValue(cpu, "Threads") == "2"
        given = make_context(vac, platform="CPU", properties={"Threads": "1"}, threads=3)
        assert given.getPlatform().getPropertyValue(given, "Threads") == "1"
    with pytest.raises(InputError, match="make_context needs"):
        make_context(42)
    # OpenMM's seed 0 means "random": every int maps to a fixed non-zero seed
    assert openmm_seed(0) != 0 and openmm_seed(0) == openmm_seed(0)
    integ = langevin_integrator(300.0, 1.0, 0.001, seed=5)
    assert integ.getRandomNumberSeed() == openmm_seed(5)
    with pytest.raises(InputError, match="timestep"):
        langevin_integrator(300.0, 1.0, 0.0, seed=0)


def test_invalid_frames_warn_once_per_model_and_are_counted(vac, caplog):
    """Many batches with clashing or broken frames: one warning per model, a DEBUG log line
    per batch with the details, and counts a stage can report once (total and per stage)."""
    m = EnergyModel(vac, platform="Reference")
    caplog.set_level("DEBUG", logger="boltzgen.energy")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # even when every warning would be shown
        for k in range(40):
            x = _batch(vac, 3, seed=k)
            x[k % 3, 4, 0] = float("nan")
            if k % 2:
                x[(k + 1) % 3, 3] = x[(k + 1) % 3, 10] + 0.001  # an overlap too
            m.energy_and_forces(x)
        half = m.invalid_summary()
        m(_batch(vac, 5, seed=99))  # a clean batch
    ours = [w for w in seen if issubclass(w.category, InvalidConfigurationWarning)]
    assert len(ours) == 1 and str(ours[0].message) == INVALID_MESSAGE
    assert ours[0].filename.endswith("energy.py")  # one fixed location: the registry dedups
    debug = [r for r in caplog.records if r.name == "boltzgen.energy"]
    assert len(debug) == 40 and all(r.levelname == "DEBUG" for r in debug)
    assert "1 overlap" in debug[1].getMessage() and "first index 1" in debug[1].getMessage()
    assert m.n_invalid == 60 and m.n_evaluated == 125
    assert m.invalid_counts == {"nonfinite_input": 40, "overlap": 20, "nonfinite_energy": 0}
    total = m.invalid_summary()
    assert total["fraction"] == pytest.approx(60 / 125) and total["overlap"] == 20
    stage = m.invalid_summary(since=half)
    assert stage == {
        "n_evaluated": 5,
        "n_invalid": 0,
        "nonfinite_input": 0,
        "overlap": 0,
        "nonfinite_energy": 0,
        "fraction": 0.0,
    }


def test_invalid_warning_shows_once_per_process_under_the_default_filter(vac):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's default for UserWarning
        for _ in range(3):  # three models (e.g. three stages), many batches each
            m = EnergyModel(vac, platform="Reference")
            for k in range(5):
                x = _batch(vac, 2, seed=k)
                x[0, 0, 0] = float("inf")
                m(x)
            assert m.n_invalid == 5
    assert sum(issubclass(w.category, InvalidConfigurationWarning) for w in seen) == 1
