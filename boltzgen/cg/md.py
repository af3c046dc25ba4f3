r"""Batched Langevin dynamics of many independent CG walkers with a learned force field.

BAOAB splitting (Leimkuhler and Matthews 2013): half kick (B), half drift (A), exact
Ornstein-Uhlenbeck velocity update (O) with ``a = exp(-gamma dt)``, half drift, force, half
kick; one force evaluation per step. Its configurational sampling error is O(dt^2) and small
at large friction; OpenMM's LangevinMiddleIntegrator is the same scheme written with
half-step velocities. Units: nm, ps, kJ/mol, g/mol (amu), so a = F/m is in nm/ps^2 and the
thermal velocity is sqrt(kT/m) nm/ps.

Blow-ups: positions and forces are checked for finite values at every step and the longest
CG bond at every ``check_interval`` steps; a walker that fails raises :class:`CGMDError`
naming the step and the walkers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import torch

from boltzgen.errors import BoltzgenError, InputError, ShapeError

__all__ = ["CGMDError", "CGTrajectory", "simulate_cg"]


class CGMDError(BoltzgenError, RuntimeError):
    """CG MD blew up (non-finite positions or forces, or a bond longer than the limit).

    Attributes: ``step`` (1-based step at which it was detected), ``walkers`` (indices).
    """

    def __init__(self, message: str, step: int, walkers: list[int]):
        super().__init__(message)
        self.step = int(step)
        self.walkers = list(walkers)


@dataclass
class CGTrajectory:
    """positions (n_walkers, n_frames, n_beads, 3) nm (float32), time (n_frames,) ps,
    topology (bead topology or None), n_steps, timestep (ps)."""

    positions: np.ndarray
    time: np.ndarray
    topology: mdtraj.Topology | None = None
    n_steps: int = 0
    timestep: float = 0.0

    @property
    def n_walkers(self) -> int:
        return int(self.positions.shape[0])

    def frames(self) -> np.ndarray:
        """All frames of all walkers, walker after walker: (n_walkers * n_frames, n_beads, 3)."""
        return self.positions.reshape(-1, *self.positions.shape[2:])

    def to_mdtraj(self, walker: int | None = None) -> mdtraj.Trajectory:
        """One walker's trajectory, or all walkers concatenated (``walker=None``)."""
        if self.topology is None:
            raise InputError("this CG trajectory has no topology")
        if walker is None:
            xyz = self.frames()
            t = np.tile(self.time, self.n_walkers)
        else:
            xyz, t = self.positions[walker], self.time
        return mdtraj.Trajectory(xyz.astype(np.float32), self.topology, time=t)

    def save(self, path: str | Path, per_walker: bool = False) -> list[Path]:
        """Write mdtraj HDF5: one file with all walkers concatenated, or with ``per_walker``
        ``<stem>_<k><suffix>`` per walker. Returns the paths."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not per_walker:
            self.to_mdtraj().save_hdf5(str(path), force_overwrite=True)
            return [path]
        out = []
        for k in range(self.n_walkers):
            p = path.with_name(f"{path.stem}_{k}{path.suffix}")
            self.to_mdtraj(k).save_hdf5(str(p), force_overwrite=True)
            out.append(p)
        return out


def simulate_cg(
    forcefield: Any,
    x0: Any,
    n_steps: int,
    *,
    masses: Any,
    temperature: float,
    timestep: float = 0.002,
    friction: float = 1.0,
    report_interval: int = 100,
    n_walkers: int | None = None,
    seed: int = 0,
    topology: mdtraj.Topology | None = None,
    max_bond: float | None = None,
    check_interval: int = 10,
    dtype: torch.dtype = torch.float64,
    progress: Callable[[float, str], None] | None = None,
) -> CGTrajectory:
    """Langevin MD (BAOAB) of independent walkers on ``forcefield``.

    Args:
        forcefield: has ``forces(x) -> (E, F)`` with x (W, n_beads, 3) nm, F kJ/mol/nm (a
            :class:`~boltzgen.cg.forcefield.CGForceField`).
        x0: start positions (W, n_beads, 3) nm, or (n_beads, 3) repeated ``n_walkers`` times.
        n_steps: steps per walker. masses: (n_beads,) g/mol. temperature: K.
        timestep: ps. friction: 1/ps. report_interval: steps between saved frames.
        seed: initial velocities (Maxwell-Boltzmann) and noise.
        topology: bead topology stored with the result (for saving).
        max_bond: nm; a CG bond (``forcefield.bond_idx``) longer than this is a blow-up.
            Default 3 x the longest prior bond length (if the force field has bond priors).
        progress: ``progress(fraction, message)`` about every 5 % of the run.

    Raises:
        CGMDError: a walker blew up (``.step``, ``.walkers``).
    """
    from boltzgen.constants import GAS_CONSTANT

    x = torch.as_tensor(np.asarray(x0) if not torch.is_tensor(x0) else x0).to(dtype)
    if x.ndim == 2:
        x = x[None].repeat(int(n_walkers or 1), 1, 1)
    elif n_walkers is not None and x.shape[0] != n_walkers:
        raise ShapeError(f"x0 has {x.shape[0]} walkers, n_walkers={n_walkers}")
    if x.ndim != 3 or x.shape[2] != 3:
        raise ShapeError(f"x0 must be (n_walkers, n_beads, 3) nm, got {tuple(x.shape)}")
    w, n = x.shape[0], x.shape[1]
    m = torch.as_tensor(np.asarray(masses, dtype=np.float64), dtype=dtype).reshape(-1)
    if m.shape != (n,) or bool((m <= 0).any()):
        raise InputError(f"masses must be ({n},) positive g/mol")
    if n_steps < 1 or report_interval < 1 or timestep <= 0 or friction < 0:
        raise InputError("need n_steps >= 1, report_interval >= 1, timestep > 0, friction >= 0")
    if not bool(torch.isfinite(x).all()):
        raise InputError("start positions contain NaN or inf")
    kT = GAS_CONSTANT * float(temperature)
    bonds = getattr(forcefield, "bond_idx", None)
    if max_bond is None and bonds is not None and len(bonds):
        max_bond = 3.0 * float(forcefield.bond_r0.max())
    gen = torch.Generator().manual_seed(int(seed))
    sigma = torch.sqrt(kT / m)[None, :, None]  # nm/ps
    v = sigma * torch.randn(x.shape, generator=gen, dtype=dtype)
    a = math.exp(-friction * timestep)
    b = math.sqrt(max(0.0, 1.0 - a * a))
    inv_m = (1.0 / m)[None, :, None]
    dt = float(timestep)

    def force(pos: torch.Tensor, step: int) -> torch.Tensor:
        _, f = forcefield.forces(pos)
        f = f.detach().to(dtype)
        bad = ~torch.isfinite(f).all(-1).all(-1)
        if bool(bad.any()):
            walkers = torch.nonzero(bad).flatten().tolist()
            raise CGMDError(
                f"CG MD blew up at step {step}: non-finite forces in walker(s) {walkers[:10]}",
                step,
                walkers,
            )
        return f

    f = force(x, 0)
    n_frames = n_steps // report_interval
    out = np.empty((w, n_frames, n, 3), dtype=np.float32)
    frame = 0
    every = max(1, n_steps // 20)
    for step in range(1, n_steps + 1):
        v = v + 0.5 * dt * f * inv_m
        x = x + 0.5 * dt * v
        v = a * v + b * sigma * torch.randn(x.shape, generator=gen, dtype=dtype)
        x = x + 0.5 * dt * v
        bad = ~torch.isfinite(x).all(-1).all(-1)
        if bool(bad.any()):
            walkers = torch.nonzero(bad).flatten().tolist()
            raise CGMDError(
                f"CG MD blew up at step {step}: non-finite positions in walker(s) {walkers[:10]}",
                step,
                walkers,
            )
        if max_bond is not None and bonds is not None and step % check_interval == 0:
            r = torch.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], dim=-1)
            far = (r > max_bond).any(-1)
            if bool(far.any()):
                walkers = torch.nonzero(far).flatten().tolist()
                raise CGMDError(
                    f"CG MD blew up at step {step}: a bond longer than {max_bond:.3g} nm in "
                    f"walker(s) {walkers[:10]} (max {float(r.max()):.3g} nm)",
                    step,
                    walkers,
                )
        f = force(x, step)
        v = v + 0.5 * dt * f * inv_m
        if step % report_interval == 0 and frame < n_frames:
            out[:, frame] = x.detach().cpu().numpy()
            frame += 1
        if progress is not None and (step % every == 0 or step == n_steps):
            progress(step / n_steps, f"CG MD step {step}/{n_steps}")
    time = (np.arange(1, n_frames + 1) * report_interval * dt).astype(np.float32)
    return CGTrajectory(out, time, topology, int(n_steps), dt)
