"""The flow as an MD potential: U(x) = -kT log q(x) (kJ/mol), F(x) = kT grad_x log q(x).

Smooth flows have C-infinity densities, so their forces are smooth and a symplectic integrator
conserves the total energy; spline flows (C1 only on circles, C2 elsewhere) do worse. Units:
nm, ps, kJ/mol, masses in Da (g/mol), so accelerations are F/m in nm/ps^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from boltzgen.errors import FlowMDError, InputError
from boltzgen.systems import GAS_CONSTANT


@dataclass
class FlowTrajectory:
    """Result of :func:`flow_md`: positions (n_frames, n_atoms, 3) nm, velocities nm/ps,
    potential/kinetic/total energies (n_frames,) kJ/mol, time (n_frames,) ps."""

    positions: np.ndarray
    velocities: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    time: np.ndarray

    @property
    def total_energy(self) -> np.ndarray:
        return self.potential_energy + self.kinetic_energy

    def energy_drift(self) -> dict[str, float]:
        """Total-energy statistics in kJ/mol: max |E - E0|, std, and the fluctuation metric
        std(E_total) / std(E_potential) (0 for perfect conservation)."""
        e = self.total_energy
        return {
            "max_abs_deviation": float(np.max(np.abs(e - e[0]))),
            "std_total": float(np.std(e)),
            "fluctuation_ratio": float(np.std(e) / max(np.std(self.potential_energy), 1e-300)),
        }


def masses(system) -> np.ndarray:
    """(n_atoms,) atomic masses in Da from the OpenMM system."""
    omm = system.openmm_system
    return np.array([omm.getParticleMass(i)._value for i in range(omm.getNumParticles())])


def flow_md(
    gen,
    x0: np.ndarray,
    n_steps: int,
    timestep: float = 0.001,
    report_interval: int = 10,
    thermostat: str = "nve",
    friction: float = 1.0,
    temperature: float | None = None,
    seed: int = 0,
) -> FlowTrajectory:
    """MD on the flow's potential from positions ``x0`` (n_atoms, 3) nm.

    ``thermostat="nve"``: velocity Verlet (energy-conservation check). ``"langevin"``: BAOAB
    Langevin at ``temperature`` (K, default the system's) with ``friction`` (1/ps). Initial
    velocities are Maxwell-Boltzmann at that temperature, with the centre-of-mass motion removed.
    """
    if thermostat not in ("nve", "langevin"):
        raise InputError(f"thermostat must be 'nve' or 'langevin', got {thermostat!r}")
    if n_steps < 1 or timestep <= 0:
        raise InputError("n_steps must be >= 1 and timestep > 0 (ps)")
    system = gen.system
    kT_flow = system.kT  # the flow's density is exp(-E/kT_system)
    temp = system.temperature if temperature is None else float(temperature)
    kT = GAS_CONSTANT * temp
    dtype = torch.float64
    m = torch.as_tensor(masses(system), dtype=dtype)[:, None]
    if bool((m <= 0).any()):
        raise InputError("flow MD needs positive masses for all atoms (no virtual sites)")
    gen64 = gen.with_dtype("float64")
    rng = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(x0), dtype=dtype).reshape(1, -1, 3)
    v = torch.randn(x.shape, generator=rng, dtype=dtype) * torch.sqrt(kT / m)
    v = v - (m * v).sum(1, keepdim=True) / m.sum()

    def potential_and_force(xx):
        lq, g = gen64.force(xx)
        return float(-kT_flow * lq[0].detach()), kT_flow * g

    pot, f = potential_and_force(x)
    if not np.isfinite(pot):
        raise InputError("the start configuration lies outside the model's support")
    frames: dict[str, list] = {k: [] for k in ("x", "v", "pot", "kin", "t")}

    def report(step):
        frames["x"].append(x[0].numpy().copy())
        frames["v"].append(v[0].numpy().copy())
        frames["pot"].append(pot)
        frames["kin"].append(float(0.5 * (m * v**2).sum()))
        frames["t"].append(step * timestep)

    report(0)
    dt = timestep
    c1 = np.exp(-friction * dt)
    for step in range(1, n_steps + 1):
        v = v + 0.5 * dt * f / m
        if thermostat == "nve":
            x = x + dt * v
        else:  # BAOAB
            x = x + 0.5 * dt * v
            noise = torch.randn(x.shape, generator=rng, dtype=dtype)
            v = c1 * v + np.sqrt(1 - c1**2) * torch.sqrt(kT / m) * noise
            x = x + 0.5 * dt * v
        pot, f = potential_and_force(x)
        if not np.isfinite(pot):
            raise FlowMDError(f"flow MD left the model's support at step {step}", step)
        v = v + 0.5 * dt * f / m
        if step % report_interval == 0:
            report(step)
    return FlowTrajectory(
        positions=np.stack(frames["x"]).astype(np.float32),
        velocities=np.stack(frames["v"]).astype(np.float32),
        potential_energy=np.asarray(frames["pot"]),
        kinetic_energy=np.asarray(frames["kin"]),
        time=np.asarray(frames["t"]),
    )
