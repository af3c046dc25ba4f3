"""At a temperature other than 300 K, against thermometers and a kT computed here.

Every other test runs at the default 300 K and compares u * kT with E using the library's own
kT, so a thermostat or an energy that ignored ``System.temperature`` (or a wrong gas constant)
would pass them. Here the system is at 400 K and:

* the kinetic temperature of the library's Langevin thermostat (``boltzgen.openmm_context``),
  from OpenMM's velocities, averages to 400 K;
* ``bg.simulate`` (no temperature argument: it must take the system's) samples positions at
  400 K, read off the configurational thermometer kT = <|grad U|^2> / <laplacian U> of the
  recorded positions and forces (no velocities needed);
* ``EnergyModel`` returns u = E / kT with kT = R T from ``scipy.constants``, and du/dx = -F/kT.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import scipy.constants
import torch

import boltzgen as bg
from boltzgen.openmm_context import langevin_integrator, make_context

T = 400.0
R_KJ = scipy.constants.R / 1000.0  # kJ/mol/K, independent of boltzgen.constants
KT = R_KJ * T


@pytest.fixture(scope="module")
def adp400():
    return bg.System.alanine_dipeptide(temperature=T)


def _openmm_energy_forces(system, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E (B,) kJ/mol and F (B, n, 3) kJ/mol/nm straight from OpenMM (Reference)."""
    ctx = openmm.Context(
        system.openmm_system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    e, f = [], []
    for xi in x:
        ctx.setPositions(xi * unit.nanometer)
        st = ctx.getState(getEnergy=True, getForces=True)
        e.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        f.append(st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return np.array(e), np.array(f)


def test_reduced_energy_is_E_over_RT_at_400K(adp400):
    rng = np.random.default_rng(0)
    x = adp400.positions[None] + 0.005 * rng.standard_normal((5, adp400.n_atoms, 3))
    e, f = _openmm_energy_forces(adp400, x)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    with bg.EnergyModel(adp400, platform="Reference") as em:
        u = em(xt)
        (grad,) = torch.autograd.grad(u.sum(), xt)
        _, forces = em.energy_and_forces(x)
    np.testing.assert_allclose(u.detach().numpy(), e / KT, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), -f / KT, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(forces), f, rtol=1e-5, atol=1e-3)
    # the check has the power to see a 300 K kT: the energies here are tens of kT
    assert np.abs(e / KT - e / (R_KJ * 300.0)).min() > 1.0


def test_langevin_thermostat_kinetic_temperature_at_400K(adp400):
    # plain Langevin MD as the library builds it (its integrator and Context), 1 fs steps
    integrator = langevin_integrator(adp400.temperature, 1.0, 0.001, 11)
    ctx = make_context(adp400, integrator, "Reference")
    ctx.setPositions(adp400.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx)
    ctx.setVelocitiesToTemperature(100.0 * unit.kelvin, 5)  # start cold: the bath must heat it
    integrator.step(5_000)  # 5 ps: 5 friction times
    masses = np.array(
        [
            adp400.openmm_system.getParticleMass(i).value_in_unit(unit.dalton)
            for i in range(adp400.n_atoms)
        ]
    )
    n_dof = 3 * adp400.n_atoms  # no constraints, centre-of-mass motion not removed
    temps = []
    for _ in range(2_000):  # 200 ps, a sample every 100 fs
        integrator.step(100)
        v = ctx.getState(getVelocities=True).getVelocities(asNumpy=True)
        v = v.value_in_unit(unit.nanometer / unit.picosecond)
        kinetic = 0.5 * np.sum(masses[:, None] * v**2)  # kJ/mol (Da nm^2/ps^2)
        temps.append(2.0 * kinetic / (n_dof * R_KJ))
    temps = np.array(temps)
    # one sample's spread is T sqrt(2/66) = 70 K; with the kinetic energy decorrelating in
    # ~0.5 ps the 2000 samples are worth ~400, so the mean's error is ~3.5 K: a 15 K band is
    # > 4 sigma, and 300 K (a thermostat ignoring the system's temperature) is 100 K away.
    # Measured: 405.8 +- 3.0 K (LangevinMiddle's half-step velocities of the H stretches run
    # about 1 % hot at 1 fs; its positions are the exact ones, see the next test)
    blocks = temps.reshape(20, -1).mean(1)
    sem = blocks.std(ddof=1) / np.sqrt(len(blocks))
    assert sem < 5.0, sem
    assert abs(temps.mean() - T) < 15.0, (temps.mean(), sem)


def _hessian_trace(ctx: openmm.Context, x: np.ndarray, h: float = 1e-5) -> float:
    """Laplacian of U (kJ/mol/nm^2) at x by central differences of OpenMM's forces."""

    def forces(y):
        ctx.setPositions(y)
        return ctx.getState(getForces=True).getForces(asNumpy=True)._value

    trace = 0.0
    for a in range(x.shape[0]):
        for c in range(3):
            xp, xm = x.copy(), x.copy()
            xp[a, c] += h
            xm[a, c] -= h
            trace -= (forces(xp)[a, c] - forces(xm)[a, c]) / (2 * h)
    return trace


def test_simulate_samples_the_systems_temperature(adp400, tmp_path):
    # no temperature argument: simulate must take the system's 400 K
    out = tmp_path / "md400.h5"
    bg.simulate(adp400, n_steps=150_000, timestep=0.001, report_interval=250, out=out, seed=2)
    md = bg.load_md(out)
    assert md.metadata["temperature_K"] == T
    # configurational temperature kT = <|grad U|^2> / <laplacian U> (Rugh; Butler et al. 1998):
    # exact for any Boltzmann distribution of positions, so it reads the thermostat's
    # temperature off the recorded positions and forces, no velocities needed
    ctx = openmm.Context(
        adp400.openmm_system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    x = md.trajectory.xyz.astype(np.float64)[40:]  # drop the first 10 ps
    f2 = np.einsum("nij,nij->n", md.forces[40:].astype(np.float64), md.forces[40:])
    lap = np.array([_hessian_trace(ctx, xi) for xi in x])
    t_conf = f2.mean() / lap.mean() / R_KJ
    # error of the ratio of means from 20 blocks (frames 250 fs apart; one frame's ratio
    # scatters by ~110 K, so the error is ~5 K); 300 K is 100 K away
    blocks = [
        a.mean() / b.mean() / R_KJ
        for a, b in zip(*(np.array_split(v, 20) for v in (f2, lap)), strict=True)
    ]
    sem = np.std(blocks, ddof=1) / np.sqrt(len(blocks))
    assert sem < 10.0, sem
    assert abs(t_conf - T) < 4 * sem + 2.0, (t_conf, sem)
