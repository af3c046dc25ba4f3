"""Mode-collapse guard: each state's mass under the flow against its share of the data.

Energy-based training (reverse KL above all) is mode-seeking: a flow can lose a state the MD
data visit and still lower its loss. The guard labels flow draws and data frames with the same
``state_fn`` (e.g. the signs of each residue's state dihedral, :func:`dihedral_sign_states`)
and reports, per state, the flow's own share of draws (its mass q(state)), the self-normalised
importance-weighted share (an estimate of p(state)) and the data's (weighted) share. A state
the data hold but the flow proposes at less than ``min_ratio`` times its data share is listed
as dropped. Labels are strings so the report is JSON-able (it goes into the fit history).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from boltzgen.errors import ShapeError

__all__ = ["StateFn", "dihedral_sign_states", "state_masses"]

StateFn = Callable[[np.ndarray], Any]  # positions (N, n_atoms, 3) nm -> labels (N,)


def _shares(labels: np.ndarray, weights: np.ndarray | None) -> dict[str, float]:
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = np.where(np.isfinite(w), w, 0.0)
    total = w.sum()
    keys = np.unique(labels)
    return {str(k): float(w[labels == k].sum() / total) if total > 0 else 0.0 for k in keys}


def state_masses(
    flow_labels: Any,
    data_labels: Any,
    flow_log_weights: Any = None,
    data_weights: Any = None,
    min_ratio: float = 0.2,
) -> dict[str, Any]:
    """Compare state populations of flow draws and data frames.

    Args:
        flow_labels: (n,) state label of each flow draw.
        data_labels: (m,) state label of each data frame.
        flow_log_weights: optional (n,) log importance weights of the draws (self-normalised
            here; -inf = zero weight) for the reweighted estimate.
        data_weights: optional (m,) frame weights of the data.
        min_ratio: a data state with flow share < min_ratio * data share is "dropped".

    Returns:
        ``{"states": {label: {"data", "flow", "reweighted"}}, "dropped": [labels],
        "worst_ratio": min over data states of flow share / data share}``.
    """
    fl = np.asarray(flow_labels).astype(str)
    dl = np.asarray(data_labels).astype(str)
    if fl.ndim != 1 or dl.ndim != 1:
        raise ShapeError("state labels must be one-dimensional, one per draw or frame")
    rew = None
    if flow_log_weights is not None:
        lw = np.asarray(flow_log_weights, dtype=np.float64)
        if lw.shape != fl.shape:
            raise ShapeError(f"flow_log_weights must be {fl.shape}, got {lw.shape}")
        lw = np.where(np.isnan(lw), -np.inf, lw)
        rew = np.exp(lw - lw.max()) if np.isfinite(lw).any() else np.zeros(len(lw))
    data = _shares(dl, data_weights)
    flow = _shares(fl, None)
    reweighted = _shares(fl, rew) if rew is not None else {}
    states = {
        k: {
            "data": data.get(k, 0.0),
            "flow": flow.get(k, 0.0),
            "reweighted": reweighted.get(k, float("nan")) if rew is not None else float("nan"),
        }
        for k in sorted(set(data) | set(flow))
    }
    ratios = {k: flow.get(k, 0.0) / v for k, v in data.items() if v > 0}
    return {
        "states": states,
        "dropped": sorted(k for k, r in ratios.items() if r < min_ratio),
        "worst_ratio": float(min(ratios.values())) if ratios else float("nan"),
    }


def dihedral_sign_states(system) -> StateFn | None:
    """Labels from the signs of each residue's state dihedral (:func:`boltzgen.cv.state_dihedrals`,
    e.g. ``"+-"`` for phi:2 >= 0, phi:3 < 0), or None for a molecule without backbone."""
    from boltzgen.cv import state_dihedrals
    from boltzgen.errors import BoltzgenError

    try:
        cvs = list(state_dihedrals(system).values())
    except (BoltzgenError, AttributeError, ValueError):
        return None
    if not cvs:
        return None

    def labels(positions: np.ndarray) -> np.ndarray:
        signs = np.stack([np.asarray(cv(positions)) >= 0 for cv in cvs], axis=1)
        return np.array(["".join("+" if s else "-" for s in row) for row in signs])

    return labels
