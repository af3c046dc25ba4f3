"""What a refinement returns: :class:`SMCResult` for array input and :class:`RefinedSamples`
(a :class:`~boltzgen.samples.Samples` that also stores log Z, its error, the cost and the
per-level history in its file) for Samples input."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tables

from boltzgen.analysis import kish_ess, normalized_weights
from boltzgen.jsonable import json_clean
from boltzgen.samples import Samples

__all__ = ["RefinedSamples", "SMCResult", "ess_fraction", "make_result", "mean_acceptance"]


def ess_fraction(log_w: np.ndarray) -> float:
    """Kish ESS fraction, nan when every weight is zero."""
    return kish_ess(log_w) if np.isfinite(log_w).any() else float("nan")


@dataclass
class SMCResult:
    """Refined weighted samples of an arbitrary-shape state (returned for array input).

    Attributes:
        positions: (N, ...) float64, the particles.
        log_q: (N,) log q at the particles; reduced_energy: (N,) u at the particles.
        log_weights: (N,) final SMC log-weights (mean exp = Z estimate; -inf = dead particle).
        log_z, log_z_err: log Z estimate and its standard error.
        n_energy_evals: configurations passed to the energy (value + gradient per call).
        history: per-level diagnostics, see :func:`~boltzgen.refinement.refine`.
    """

    positions: np.ndarray
    log_q: np.ndarray
    reduced_energy: np.ndarray
    log_weights: np.ndarray
    log_z: float
    log_z_err: float
    n_energy_evals: int
    history: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.log_weights)

    @property
    def ess(self) -> float:
        """Kish effective sample size of the final weights as a fraction in (0, 1]."""
        return ess_fraction(self.log_weights)

    @property
    def n_eff(self) -> float:
        return self.ess * len(self)

    @property
    def normalized_weights(self) -> np.ndarray:
        return normalized_weights(self.log_weights)


@dataclass
class RefinedSamples(Samples):
    """:class:`~boltzgen.samples.Samples` after refinement, with the SMC estimates.

    It is a ``Samples`` (``to_mdtraj``, ``free_energy_difference``, ... work unchanged); the
    log-weights are the final SMC weights and ``extra["ancestor"]`` is each particle's original
    index (its "Eve" in the input). :meth:`save` also stores ``log_z``, ``log_z_err``,
    ``n_energy_evals`` and ``history``; :meth:`load` reads them back (``Samples.load`` reads
    the file as plain samples). Subsets (``r[idx]``) keep these fields unchanged, although
    log Z describes the whole population.
    """

    log_z: float = float("nan")
    log_z_err: float = float("nan")
    n_energy_evals: int = 0
    history: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Any) -> Path:
        path = super().save(path)
        meta = {
            "log_z": self.log_z,
            "log_z_err": self.log_z_err,
            "n_energy_evals": int(self.n_energy_evals),
            "history": self.history,
        }
        blob = np.frombuffer(
            json.dumps(json_clean(meta, finite_only=False)).encode(), dtype=np.uint8
        )
        with tables.open_file(str(path), "a") as h:
            h.create_array("/", "boltzgen_refine", obj=blob)
        return path

    @classmethod
    def load(cls, path: Any) -> RefinedSamples:
        out = super().load(path)
        with tables.open_file(str(path), "r") as h:
            if "/boltzgen_refine" in h:
                meta = json.loads(bytes(h.get_node("/boltzgen_refine")[:]).decode())
                out.log_z = float(meta["log_z"])
                out.log_z_err = float(meta["log_z_err"])
                out.n_energy_evals = int(meta["n_energy_evals"])
                out.history = meta["history"]
        return out


def make_result(
    template: Samples | None,
    positions: np.ndarray,
    lq: np.ndarray,
    u: np.ndarray,
    lw: np.ndarray,
    log_z: float,
    log_z_err: float,
    n_evals: int,
    hist: dict[str, Any],
    extra: dict[str, np.ndarray],
) -> RefinedSamples | SMCResult:
    """SMCResult for array input, RefinedSamples (float32 positions, topology kept) for
    Samples input."""
    if template is None:
        return SMCResult(positions, lq, u, lw, log_z, log_z_err, n_evals, hist)
    return RefinedSamples(
        positions=positions.astype(np.float32),
        log_q=lq,
        reduced_energy=u,
        log_weights=lw,
        topology=template.topology,
        extra=extra,
        log_z=log_z,
        log_z_err=log_z_err,
        n_energy_evals=n_evals,
        history=hist,
    )


def mean_acceptance(values) -> float | None:
    """The mean of the finite acceptance probabilities (levels without moves are NaN);
    None when no level moved."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else None
