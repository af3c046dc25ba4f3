"""Weighted configurations: what a Boltzmann generator draws (or MD data with uniform weights).

A :class:`Samples` file is an ordinary mdtraj HDF5 trajectory (``mdtraj.load(path)`` opens it)
with three more arrays: ``/log_weights``, ``/log_q``, ``/reduced_energy`` (float64, one entry
per frame) and optional extra per-frame arrays under ``/boltzgen_extra``; the format is
:mod:`boltzgen.h5io`'s. :func:`clash_fraction` counts the samples that are no physical
molecule (overlapping atoms or infinite energy).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np

from boltzgen.errors import InputError, ShapeError
from boltzgen.h5io import SAMPLE_ARRAYS, read_samples, write_samples

__all__ = ["CLASH_DISTANCE_NM", "Samples", "clash_fraction", "clip_log_weights"]

log = logging.getLogger(__name__)


def _vec(name: str, a: Any, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1) if a is not None else np.full(n, np.nan)
    if a.shape != (n,):
        raise ShapeError(f"{name} must be ({n},), got {a.shape}")
    return a


@dataclass
class Samples:
    """n weighted configurations.

    Attributes:
        positions: (n, n_atoms, 3) float32, nm.
        log_q: (n,) log density of the proposal at each sample (nan if unknown, e.g. MD).
        reduced_energy: (n,) u = U / kT (+inf for overlapping / non-finite configurations,
            nan if not evaluated).
        log_weights: (n,) unnormalised log importance weights; default ``-u - log_q`` with
            -inf where u = +inf. Uniform (zeros) for equilibrium MD frames.
        topology: mdtraj.Topology (needed for :meth:`to_mdtraj` and :meth:`save`).
        extra: optional per-sample arrays, each with first dimension n.
    """

    positions: np.ndarray
    log_q: np.ndarray
    reduced_energy: np.ndarray
    log_weights: np.ndarray | None = None
    topology: mdtraj.Topology | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        x = np.asarray(self.positions, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != 3:
            raise ShapeError(f"positions must be (n, n_atoms, 3) nm, got {x.shape}")
        n = x.shape[0]
        self.positions = x
        self.log_q = _vec("log_q", self.log_q, n)
        self.reduced_energy = _vec("reduced_energy", self.reduced_energy, n)
        if self.log_weights is None:
            with np.errstate(invalid="ignore"):
                lw = -self.reduced_energy - self.log_q
        else:
            lw = _vec("log_weights", self.log_weights, n).copy()
        lw[np.isposinf(self.reduced_energy)] = -np.inf
        if np.isposinf(lw).any():
            raise InputError("log_weights contain +inf")
        self.log_weights = lw
        if self.topology is not None and self.topology.n_atoms != x.shape[1]:
            raise ShapeError(
                f"topology has {self.topology.n_atoms} atoms, positions have {x.shape[1]}"
            )
        extra = {}
        for k, v in dict(self.extra).items():
            v = np.asarray(v)
            if v.ndim == 0 or len(v) != n:
                raise ShapeError(f"extra array {k!r} must have first dimension {n}")
            extra[str(k)] = v
        self.extra = extra

    # ------------------------------------------------------------------ weights
    def __len__(self) -> int:
        return self.positions.shape[0]

    @property
    def n_eff(self) -> float:
        """Kish effective sample size (sum w)^2 / sum w^2 (nan if weights are unknown)."""
        from boltzgen.analysis import n_effective

        if np.isnan(self.log_weights).any() or not np.isfinite(self.log_weights).any():
            return float("nan")
        return n_effective(self.log_weights)

    @property
    def ess(self) -> float:
        """Kish effective sample size as a fraction n_eff / n in (0, 1]."""
        return self.n_eff / len(self)

    @property
    def normalized_weights(self) -> np.ndarray:
        """(n,) importance weights summing to 1."""
        from boltzgen.analysis import normalized_weights

        return normalized_weights(self.log_weights)

    # ------------------------------------------------------------------ conversion
    def to_mdtraj(self) -> mdtraj.Trajectory:
        """The positions as an mdtraj.Trajectory (weights not included)."""
        if self.topology is None:
            raise InputError("these samples carry no topology")
        return mdtraj.Trajectory(self.positions, self.topology)

    @classmethod
    def from_trajectory(
        cls,
        traj: mdtraj.Trajectory,
        log_weights: Any = None,
        reduced_energy: Any = None,
    ) -> Samples:
        """Samples from MD frames: uniform weights unless ``log_weights`` (n,) are given;
        log_q is nan (no proposal density); ``reduced_energy`` (n,) kT if known."""
        n = traj.n_frames
        lw = np.zeros(n) if log_weights is None else log_weights
        return cls(
            positions=traj.xyz,
            log_q=np.full(n, np.nan),
            reduced_energy=np.full(n, np.nan) if reduced_energy is None else reduced_energy,
            log_weights=lw,
            topology=traj.topology,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Samples]) -> Samples:
        """Join sample sets of the same molecule (log-weights must share one normalisation,
        e.g. draws from the same proposal)."""
        if not parts:
            raise InputError("nothing to concatenate")
        keys = set(parts[0].extra)
        if any(set(p.extra) != keys for p in parts):
            raise InputError("sample sets have different extra arrays")
        return cls(
            positions=np.concatenate([p.positions for p in parts]),
            log_q=np.concatenate([p.log_q for p in parts]),
            reduced_energy=np.concatenate([p.reduced_energy for p in parts]),
            log_weights=np.concatenate([p.log_weights for p in parts]),
            topology=parts[0].topology,
            extra={k: np.concatenate([p.extra[k] for p in parts]) for k in keys},
        )

    def __getitem__(self, idx: Any) -> Samples:
        """A subset (slice, index array or boolean mask) as new Samples."""
        idx = np.arange(len(self))[idx]
        idx = np.atleast_1d(idx)
        return replace(
            self,
            positions=self.positions[idx],
            log_q=self.log_q[idx],
            reduced_energy=self.reduced_energy[idx],
            log_weights=self.log_weights[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an mdtraj HDF5 file (``mdtraj.load`` reads the positions) plus the weight
        arrays (:func:`boltzgen.h5io.write_samples`); :meth:`load` reads everything back."""
        if self.topology is None:
            raise InputError("cannot save samples without a topology")
        arrays = {name: getattr(self, name) for name in SAMPLE_ARRAYS}
        return write_samples(path, self.topology, self.positions, arrays, self.extra)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Samples:
        """Read a file written by :meth:`save`."""
        traj, arrays, extra = read_samples(path)
        return cls(positions=traj.xyz, topology=traj.topology, extra=extra, **arrays)


def clip_log_weights(samples: Samples, quantile: float = 0.999) -> tuple[Samples, dict[str, Any]]:
    """Cap log-weights at their ``quantile`` (over finite entries): opt-in variance reduction
    at the price of a bias. Never applied implicitly.

    Returns: (new Samples, report) with report keys ``quantile``, ``threshold`` (log-weight
    cap), ``n_clipped``, ``fraction_clipped``, ``ess_before``, ``ess_after``.
    """
    q = float(quantile)
    if not 0.0 < q <= 1.0:
        raise InputError(f"quantile must be in (0, 1], got {quantile}")
    lw = samples.log_weights
    finite = np.isfinite(lw)
    if not finite.any():
        raise InputError("no finite log-weights to clip")
    thr = float(np.quantile(lw[finite], q))
    clipped = finite & (lw > thr)
    new = replace(samples, log_weights=np.where(clipped, thr, lw))
    report = {
        "quantile": q,
        "threshold": thr,
        "n_clipped": int(clipped.sum()),
        "fraction_clipped": float(clipped.sum() / len(lw)),
        "ess_before": samples.ess,
        "ess_after": new.ess,
    }
    log.info("clipped %d of %d log-weights at %.4g", report["n_clipped"], len(lw), thr)
    return new, report


#: Two atoms more than two bonds apart closer than this (nm) are a clash. The closest such
#: pair in 20,000 alanine-dipeptide REMD frames (300 K, amber99sbildn) is 0.16 nm.
CLASH_DISTANCE_NM = 0.1


def _clash_pairs(topology) -> np.ndarray:
    """(P, 2) atom pairs more than two bonds apart (1-2 and 1-3 pairs excluded)."""
    n = topology.n_atoms
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in topology.bonds:
        adj[a.index].add(b.index)
        adj[b.index].add(a.index)
    close = np.zeros((n, n), dtype=bool)
    for i in range(n):
        close[i, i] = True
        for j in adj[i]:
            close[i, j] = True
            for k in adj[j]:
                close[i, k] = True
    i, j = np.triu_indices(n, k=1)
    keep = ~close[i, j]
    return np.stack([i[keep], j[keep]], axis=1)


def clash_fraction(
    samples: Samples,
    topology,
    distance: float = CLASH_DISTANCE_NM,
    max_check: int = 50_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fraction of samples that are unphysical: two atoms more than two bonds apart closer
    than ``distance`` nm, or a non-finite (infinite) reduced energy.

    Checks at most ``max_check`` samples (a random subset for more; the fractions are then
    estimates). Returns ``clash_fraction`` (overlap or infinite energy), ``overlap_fraction``,
    ``infinite_energy_fraction``, ``n_checked``, ``distance_nm``.
    """
    x = np.asarray(samples.positions)
    u = np.asarray(samples.reduced_energy)
    n = len(x)
    sel = np.arange(n)
    if n > max_check:
        sel = np.sort(np.random.default_rng(seed).choice(n, max_check, replace=False))
    pairs = _clash_pairs(topology)
    overlap = np.zeros(len(sel), dtype=bool)
    if len(pairs):
        step = max(1, int(4e6 // len(pairs)))
        for s in range(0, len(sel), step):
            xb = x[sel[s : s + step]]
            d2 = np.sum((xb[:, pairs[:, 0]] - xb[:, pairs[:, 1]]) ** 2, axis=-1)
            overlap[s : s + step] = d2.min(axis=1) < distance**2
    infinite = ~np.isfinite(u[sel])
    return {
        "clash_fraction": float(np.mean(overlap | infinite)),
        "overlap_fraction": float(np.mean(overlap)),
        "infinite_energy_fraction": float(np.mean(infinite)),
        "n_checked": len(sel),
        "distance_nm": float(distance),
    }
