"""Balancing training frames over the backbone states, so a flow sees every populated basin.

:func:`~boltzgen.cv.backbone_state_labels` (re-exported here) labels each frame by the sign
pattern of every residue's state dihedral (phi; psi for proline); :func:`pattern_weights` gives every populated pattern at least
a minimum share of the training weight without changing the distribution inside a pattern.
The weights go into :class:`~boltzgen.generator.data.TrainingData`; the importance weights of
the samples remove the bias they give the proposal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from boltzgen.analysis import kish_ess
from boltzgen.cv import backbone_state_labels
from boltzgen.errors import InputError
from boltzgen.generator.data import check_frame_weights

__all__ = ["backbone_state_labels", "pattern_weights", "weights_kish"]


def pattern_weights(
    labels: Sequence[Any],
    min_share: float = 0.05,
    min_frames: int = 5,
    frame_weights: Any = None,
    min_kish: float = 0.0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frame weights (N,) (mean 1) that give every populated state at least ``min_share`` of
    the total weight, unless that costs more than ``min_kish`` allows.

    labels: (N,) state label of each frame (e.g. from :func:`backbone_state_labels`). A state
    is populated if it holds at least ``min_frames`` frames; the others keep their data share
    (boosting two or three frames would only teach the flow spikes). Among the populated
    states, those below ``min_share`` are raised to it and the rest are scaled down in
    proportion to their data shares (water-filling, repeated until none falls below); if the
    populated states cannot all get ``min_share``, they share their total mass equally.
    Within a state every frame keeps the same weight, so the data's distribution inside each
    state is unchanged (as :func:`boltzgen.generator.data.state_weights`, which fixes the
    share of given CV intervals instead). ``frame_weights`` (N,) >= 0, for frames of a biased
    run (exp(V/kT)): the data shares are the weighted ones and, inside a state, frames keep
    weights in proportion to them.

    ``min_kish`` in [0, 1]: the weights' Kish effective size, as a fraction of the frames' own
    (of ``frame_weights``' when given), is kept at least this; where ``min_share`` would push
    it lower (many rare states, each boosted hundreds of times: a flow then trains on a few
    thousand effective frames and learns spikes around the rare ones), the least share is
    lowered by bisection until it holds. 0 (default) keeps ``min_share`` as given.

    Returns: (weights, table) with one row per state: ``state``, ``n_frames``, ``data_share``,
    ``weight_share``, ``populated``, sorted by decreasing frame count.
    """
    lab = np.asarray(labels, dtype=object)
    if lab.ndim != 1 or len(lab) == 0:
        raise InputError("labels must be a non-empty (N,) array")
    if not 0.0 <= min_share < 1.0:
        raise InputError(f"min_share must be in [0, 1), got {min_share}")
    if not 0.0 <= min_kish <= 1.0:
        raise InputError(f"min_kish must be in [0, 1], got {min_kish}")
    n = len(lab)
    states, inverse, counts = np.unique(lab.astype(str), return_inverse=True, return_counts=True)
    fw = (
        np.ones(n)
        if frame_weights is None
        else check_frame_weights(frame_weights, n, "frame_weights")
    )
    in_state = np.bincount(inverse, weights=fw, minlength=len(states))
    natural = in_state / fw.sum()
    populated = counts >= int(min_frames)

    def weights_for(share: float) -> tuple[np.ndarray, np.ndarray]:
        target = _water_fill(natural, populated, share)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_weight = np.where(in_state > 0, target / in_state, 0.0)
        return per_weight[inverse] * fw * n, target

    weights, target = weights_for(min_share)
    floor = min_kish * weights_kish(fw)
    if weights_kish(weights) < floor:
        lo, hi = 0.0, min_share  # share lo keeps the Kish size (0: the data's own shares)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if weights_kish(weights_for(mid)[0]) >= floor else (lo, mid)
        weights, target = weights_for(lo)
    order = np.argsort(-counts, kind="stable")
    table = [
        {
            "state": str(states[k]),
            "n_frames": int(counts[k]),
            "data_share": float(natural[k]),
            "weight_share": float(target[k]),
            "populated": bool(populated[k]),
        }
        for k in order
    ]
    return weights, table


def weights_kish(w: np.ndarray) -> float:
    """Kish effective size of weights w (N,) >= 0 as a fraction of N."""
    with np.errstate(divide="ignore"):
        return kish_ess(np.log(w))


def _water_fill(natural: np.ndarray, populated: np.ndarray, min_share: float) -> np.ndarray:
    """Target shares: populated states below ``min_share`` raised to it, the other populated
    ones scaled down in proportion (equal shares if the minimum cannot be met)."""
    target = natural.copy()
    mass = natural[populated].sum()
    idx = np.flatnonzero(populated)
    if len(idx) <= 1 or min_share <= 0:
        return target
    low: set[int] = set()
    while True:
        rest = [k for k in idx if k not in low]
        if not rest or min_share * len(low) >= mass:
            target[idx] = mass / len(idx)  # cannot give each its minimum: equal shares
            return target
        scale = (mass - min_share * len(low)) / natural[rest].sum()
        new_low = {k for k in rest if natural[k] * scale < min_share}
        if not new_low:
            target[rest] = natural[rest] * scale
            target[list(low)] = min_share
            return target
        low |= new_low
