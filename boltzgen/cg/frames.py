"""All-atom training frames for the CG pipeline, with the importance weights they may carry.

Frames come as MD data (equilibrium, uniform weights), as biased MD with relative weights
(e.g. metadynamics, exp(V/kT)), or as weighted i.i.d. samples of a Boltzmann generator
(:class:`boltzgen.samples.Samples`, :class:`boltzgen.refinement.RefinedSamples`, or their
HDF5 files from ``boltzgen run`` / ``boltzgen sample``), whose ``log_weights`` are the log
importance weights exp(-u - log q) up to a constant. :func:`load_weighted_frames` reads all
of them; :func:`weights_from_log` turns log-weights into relative weights, rejecting bad ones
with :class:`FrameWeightError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError, ShapeError
from boltzgen.generator.data import check_frame_weights

__all__ = [
    "FrameWeightError",
    "FrameWeightLengthError",
    "check_weights",
    "is_samples_file",
    "load_frames",
    "load_weighted_frames",
    "training_frames",
    "weights_from_log",
]


class FrameWeightError(InputError):
    """Frame (log-)weights that cannot weigh the frames: NaN, +inf, all zero (all log-weights
    -inf), negative, or not one per frame."""


class FrameWeightLengthError(FrameWeightError, ShapeError):
    """Frame (log-)weights not one per frame (a :class:`ShapeError` as well)."""


def weights_from_log(log_weights: Any, n: int, name: str = "frame_log_weights") -> np.ndarray:
    """Relative weights exp(lw - max lw) (n,) float64 of log-weights (n,); -inf -> weight 0
    (e.g. clashing samples). NaN, +inf, all -inf or a length other than ``n`` raise
    :class:`FrameWeightError` naming ``name``."""
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.shape != (int(n),):
        raise FrameWeightLengthError(f"{name} must be ({n},) (one per frame), got {lw.shape}")
    if np.isnan(lw).any():
        raise FrameWeightError(f"{name} contain {int(np.isnan(lw).sum())} NaN value(s)")
    if np.isposinf(lw).any():
        raise FrameWeightError(f"{name} contain +inf")
    if not np.isfinite(lw).any():
        raise FrameWeightError(f"{name} are all -inf (every frame has weight zero)")
    return np.exp(lw - lw[np.isfinite(lw)].max())


def check_weights(weights: Any, n: int, name: str = "frame_weights") -> np.ndarray:
    """Relative weights (n,) >= 0 as float64 (:func:`boltzgen.generator.data.check_frame_weights`);
    bad ones raise :class:`FrameWeightError`."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (int(n),):
        raise FrameWeightLengthError(f"{name} must be ({n},) (one per frame), got {w.shape}")
    try:
        return check_frame_weights(w, n, name)
    except InputError as exc:
        raise FrameWeightError(str(exc)) from exc


def is_samples_file(path: str | Path) -> bool:
    """Whether ``path`` is a samples file (positions and ``/log_weights``)."""
    import tables

    path = Path(path)
    if not path.exists() or not tables.is_hdf5_file(str(path)):
        return False
    with tables.open_file(str(path), "r") as h:
        return "/log_weights" in h


def load_weighted_frames(frames: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """All-atom positions (N, n_atoms, 3) nm, forces (or None) and log-weights (N,) (or None
    for unweighted frames) from an array, an mdtraj.Trajectory, an MD record or file
    (``boltzgen.load_md``), or weighted samples (a :class:`~boltzgen.samples.Samples` /
    ``RefinedSamples`` or its HDF5 file, e.g. ``refined.h5`` of ``boltzgen run``)."""
    if isinstance(frames, str | Path):
        if is_samples_file(frames):
            import mdtraj
            import tables

            with tables.open_file(str(frames), "r") as h:
                lw = np.asarray(h.get_node("/log_weights")[:], np.float64)
            return np.asarray(mdtraj.load(str(frames)).xyz), None, lw
        from boltzgen.md import load_md

        frames = load_md(frames)
    if hasattr(frames, "log_weights") and hasattr(frames, "positions"):
        return np.asarray(frames.positions), None, np.asarray(frames.log_weights, np.float64)
    if hasattr(frames, "trajectory") and hasattr(frames, "forces"):
        return np.asarray(frames.trajectory.xyz), np.asarray(frames.forces), None
    if hasattr(frames, "xyz"):
        return np.asarray(frames.xyz), None, None
    if torch.is_tensor(frames):
        frames = frames.detach().cpu().numpy()
    return np.asarray(frames), None, None


def load_frames(frames: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """All-atom positions (N, n_atoms, 3) nm and forces (or None): :func:`load_weighted_frames`
    without the weights."""
    x, f, _ = load_weighted_frames(frames)
    return x, f


def training_frames(
    frames: Any,
    forces: Any,
    frame_weights: Any,
    frame_log_weights: Any,
    mapping: Any,
    max_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """All-atom positions, forces (or None) and relative frame weights (None if uniform),
    checked; frames of weight zero dropped (e.g. clashing flow samples); thinned evenly to
    ``max_frames``."""
    x_aa, f_aa, lw = load_weighted_frames(frames)
    if forces is not None:
        f_aa = np.asarray(forces)
    if x_aa.ndim != 3 or x_aa.shape[1] != mapping.n_atoms:
        raise ShapeError(f"frames must be (N, {mapping.n_atoms}, 3) nm, got {x_aa.shape}")
    if frame_weights is not None and frame_log_weights is not None:
        raise InputError("give frame_weights or frame_log_weights, not both")
    w_aa = None
    if frame_weights is not None:
        w_aa = check_weights(frame_weights, len(x_aa), "frame_weights")
    elif frame_log_weights is not None:
        w_aa = weights_from_log(frame_log_weights, len(x_aa), "frame_log_weights")
    elif lw is not None:
        w_aa = weights_from_log(lw, len(x_aa), "the frames' log_weights")
    if w_aa is not None and (w_aa == 0).any():
        keep = w_aa > 0
        x_aa, w_aa = x_aa[keep], w_aa[keep]
        f_aa = None if f_aa is None or f_aa.shape[:1] != keep.shape else f_aa[keep]
    if w_aa is not None and np.all(w_aa == w_aa[0]):
        w_aa = None  # uniform (e.g. MD frames as Samples): the unweighted path, bit for bit
    if max_frames is not None and len(x_aa) > max_frames:
        sel = np.linspace(0, len(x_aa) - 1, int(max_frames)).round().astype(int)
        x_aa = x_aa[sel]
        f_aa = None if f_aa is None else f_aa[sel]
        w_aa = None if w_aa is None else w_aa[sel]
    return x_aa, f_aa, w_aa
