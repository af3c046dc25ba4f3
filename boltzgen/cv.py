"""Collective variables: callables positions (n, n_atoms, 3) nm -> (n,) values.

``dihedral(system, "phi")`` picks a named backbone / side-chain dihedral from the topology
(mdtraj's atom definitions, so the values equal ``mdtraj.compute_phi`` etc.). A CV works on
NumPy arrays, mdtraj trajectories and torch tensors (differentiable, for biasing or training).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from boltzgen.coordinates.dihedrals import DIHEDRAL_NAMES, dihedral_indices
from boltzgen.errors import InputError, ShapeError

__all__ = ["DIHEDRAL_NAMES", "Dihedral", "dihedral"]


@dataclass(frozen=True)
class Dihedral:
    """Dihedral angle of four atoms, in radians in (-pi, pi] (IUPAC sign, as mdtraj).

    Attributes: atoms (4 atom indices), name (for labels), period = 2 pi (periodic CV).
    """

    atoms: tuple[int, int, int, int]
    name: str = "dihedral"
    period: float = 2.0 * math.pi

    def __call__(self, positions: Any) -> Any:
        """positions (n, n_atoms, 3) or (n_atoms, 3) nm (NumPy, torch or mdtraj.Trajectory)
        -> (n,) radians; torch in, torch out (with gradients)."""
        if hasattr(positions, "xyz"):
            positions = positions.xyz
        if hasattr(positions, "detach"):  # torch
            import torch

            x = positions if positions.dim() == 3 else positions.unsqueeze(0)
            self._check(tuple(x.shape))
            p = [x[:, i, :] for i in self.atoms]
            b0, b1, b2 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
            n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
            y = torch.linalg.norm(b1, dim=-1) * (b0 * n2).sum(-1)
            return torch.atan2(y, (n1 * n2).sum(-1))
        x = np.asarray(positions, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        self._check(x.shape)
        p = [x[:, i, :] for i in self.atoms]
        b0, b1, b2 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
        n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
        y = np.linalg.norm(b1, axis=-1) * (b0 * n2).sum(-1)
        return np.arctan2(y, (n1 * n2).sum(-1))

    def _check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[2] != 3:
            raise ShapeError(f"positions must be (n, n_atoms, 3) nm, got {shape}")
        if max(self.atoms) >= shape[1]:
            raise ShapeError(f"dihedral atoms {self.atoms} out of range for {shape[1]} atoms")


def dihedral(system_or_topology: Any, name: str | Sequence[int], index: int = 0) -> Dihedral:
    """A dihedral CV from a System, mdtraj/OpenMM topology or trajectory.

    Args:
        name: phi, psi, omega, chi1..chi4 (mdtraj definitions; e.g. phi = C(i-1)-N-CA-C), or
            four atom indices.
        index: which occurrence along the chain (0 = first residue that has it).
    """
    if not isinstance(name, str):
        atoms = tuple(int(a) for a in name)
        if len(atoms) != 4 or len(set(atoms)) != 4 or min(atoms) < 0:
            raise InputError(f"a dihedral needs 4 distinct atom indices, got {name!r}")
        return Dihedral(atoms, name="dihedral" + str(atoms))
    idx = dihedral_indices(system_or_topology, name)
    if len(idx) == 0:
        raise InputError(f"the topology has no {name} dihedral")
    if not -len(idx) <= int(index) < len(idx):
        raise InputError(f"{name} index {index} out of range: the topology has {len(idx)}")
    return Dihedral(tuple(int(a) for a in idx[int(index)]), name=str(name).lower())
