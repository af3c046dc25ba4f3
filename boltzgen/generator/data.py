"""Training data for a Boltzmann generator: positions (nm) and, optionally, forces (kJ/mol/nm)
and per-frame weights.

Accepts what users have at hand: an ``mdtraj.Trajectory``, an array of positions, a path to an
HDF5 file written by :func:`boltzgen.simulate` (positions, energies, forces) or a loaded MD record.

Frame weights make maximum likelihood fit the weighted data distribution. Two uses: frames from
a biased ensemble (e.g. high-temperature MD reweighted to the target temperature), and shaping a
proposal, e.g. :func:`state_weights` gives a rare state a larger share than the MD data have so
the flow covers it; the importance weights exp(-u) / q remove that bias from every estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.analysis import in_state
from boltzgen.errors import InputError, ShapeError
from boltzgen.generator.config import check_state_shares

__all__ = ["TrainingData", "as_training_data", "check_state_shares", "state_weights"]


def check_frame_weights(weights: Any, n: int, name: str = "weights") -> np.ndarray:
    """``weights`` as float64 (n,): one relative weight per frame, finite, >= 0, not all zero
    (e.g. exp(V/kT) of frames sampled under a bias V). ``name`` is the argument's name in the
    errors: ShapeError for the wrong shape, InputError otherwise."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (int(n),):
        raise ShapeError(f"{name} must be ({n},) (one per frame), got {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputError(f"{name} must be finite and >= 0")
    if w.sum() <= 0:
        raise InputError(f"{name} are all zero")
    return w


@dataclass
class TrainingData:
    """Positions (N, n_atoms, 3) nm, optional forces (N, n_atoms, 3) kJ/mol/nm and optional
    frame weights (N,) >= 0 (relative; minibatches are drawn in proportion to them)."""

    positions: np.ndarray
    forces: np.ndarray | None = None
    weights: np.ndarray | None = None

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
        if self.weights is not None:
            self.weights = check_frame_weights(self.weights, x.shape[0])

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
        if self.weights is not None and self.weights[parts[0]].sum() <= 0:
            raise InputError("the training split has no frame with weight > 0")
        return tuple(
            TrainingData(
                self.positions[p],
                None if self.forces is None else self.forces[p],
                None if self.weights is None else self.weights[p],
            )
            for p in parts
        )  # type: ignore[return-value]

    @classmethod
    def join(cls, parts: list[TrainingData]) -> TrainingData:
        """Frames of several sets in order. Forces are kept only if every part has them; a part
        without weights counts as weight 1 per frame (if any part has weights)."""
        if not parts:
            raise InputError("join needs at least one training set")
        atoms = {p.positions.shape[1] for p in parts}
        if len(atoms) > 1:
            raise ShapeError(f"training sets have different atom counts: {sorted(atoms)}")
        forces = (
            np.concatenate([p.forces for p in parts])
            if all(p.forces is not None for p in parts)
            else None
        )
        weights = (
            np.concatenate([p.weights if p.weights is not None else np.ones(len(p)) for p in parts])
            if any(p.weights is not None for p in parts)
            else None
        )
        return cls(np.concatenate([p.positions for p in parts]), forces, weights)

    def probabilities(self) -> np.ndarray | None:
        """Frame weights normalised to sum 1 (None for unweighted data)."""
        return None if self.weights is None else self.weights / self.weights.sum()

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


def state_weights(
    values: np.ndarray, states: list[tuple[float, float]], shares: list[float]
) -> np.ndarray:
    """Frame weights (N,) that give each state a fixed share of the total weight.

    values: (N,) CV values (e.g. phi in rad). states: intervals ``(lo, hi)`` as in
    :func:`boltzgen.analysis.in_state` (``lo > hi`` wraps around a periodic CV); they must not
    overlap. shares: target weight share of each state, sum < 1; the frames in no state share
    the rest. Within a state every frame keeps the same weight, so the data's distribution
    inside each state is unchanged: only the states' proportions move.

    Typical use: the MD data under-sample a rare basin (plain MD adds frames only to the common
    one), and a proposal that gives the basin too little mass makes heavy-tailed importance
    weights. Giving it a share at or above its equilibrium one fixes the tail.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ShapeError(f"CV values must be (N,), got shape {v.shape}")
    check_state_shares(states, shares)
    shares_arr = np.asarray(shares, dtype=np.float64)
    w = np.zeros_like(v)
    taken = np.zeros(v.shape, dtype=bool)
    for state, share in zip(states, shares_arr, strict=True):
        mask = in_state(v, state)
        if (mask & taken).any():
            raise InputError(f"state {tuple(state)} overlaps another state")
        if not mask.any():
            raise InputError(f"no frame lies in state {tuple(state)}: cannot give it weight")
        w[mask] = share / mask.sum()
        taken |= mask
    rest = ~taken
    if not rest.any():
        raise InputError("every frame lies in a listed state: leave the shares to sum to 1")
    w[rest] = (1.0 - shares_arr.sum()) / rest.sum()
    return w * len(v)  # mean weight 1
