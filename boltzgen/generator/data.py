"""Training data for a Boltzmann generator: positions (nm) and, optionally, forces (kJ/mol/nm).

Accepts what users have at hand: an ``mdtraj.Trajectory``, an array of positions, a path to an
HDF5 file written by :func:`boltzgen.simulate` (positions, energies, forces) or a loaded MD record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError, ShapeError


@dataclass
class TrainingData:
    """Positions (N, n_atoms, 3) nm and optional forces (N, n_atoms, 3) kJ/mol/nm."""

    positions: np.ndarray
    forces: np.ndarray | None = None

    def __post_init__(self) -> None:
        x = np.asarray(self.positions)
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ShapeError(f"positions must be (N, n_atoms, 3) in nm, got {x.shape}")
        if x.shape[0] < 2:
            raise InputError(f"need at least 2 frames of training data, got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise InputError("training positions contain NaN or inf")
        self.positions = x
        if self.forces is not None:
            f = np.asarray(self.forces)
            if f.shape != x.shape:
                raise ShapeError(
                    f"forces must have the shape of positions {x.shape}, got {f.shape}"
                )
            self.forces = f

    def __len__(self) -> int:
        return self.positions.shape[0]

    def split(self, val_fraction: float, seed: int) -> tuple[TrainingData, TrainingData | None]:
        """Random train/validation split (validation None when val_fraction == 0)."""
        n = len(self)
        n_val = round(val_fraction * n)
        if n_val == 0:
            return self, None
        if n_val >= n:
            raise InputError(f"val_fraction={val_fraction} leaves no training frames")
        perm = np.random.default_rng(seed).permutation(n)
        parts = [perm[n_val:], perm[:n_val]]
        return tuple(
            TrainingData(self.positions[p], None if self.forces is None else self.forces[p])
            for p in parts
        )  # type: ignore[return-value]

    def tensors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = torch.as_tensor(self.positions, dtype=dtype)
        f = None if self.forces is None else torch.as_tensor(self.forces, dtype=dtype)
        return x, f


def as_training_data(data: Any, n_atoms: int | None = None) -> TrainingData:
    """Coerce ``data`` (TrainingData, mdtraj.Trajectory, MD record with ``.trajectory`` and
    ``.forces``, HDF5 path, or positions array) into :class:`TrainingData`."""
    if isinstance(data, TrainingData):
        out = data
    elif isinstance(data, str | Path):
        from boltzgen.md import load_md

        out = as_training_data(load_md(data))
    elif hasattr(data, "trajectory") and hasattr(data, "forces"):
        out = TrainingData(np.asarray(data.trajectory.xyz), data.forces)
    elif hasattr(data, "xyz"):
        out = TrainingData(np.asarray(data.xyz))
    else:
        out = TrainingData(np.asarray(data))
    if n_atoms is not None and out.positions.shape[1] != n_atoms:
        raise ShapeError(
            f"training data have {out.positions.shape[1]} atoms, the system has {n_atoms}"
        )
    return out
