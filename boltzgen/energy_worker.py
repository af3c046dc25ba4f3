"""Energy-evaluation workers: the OpenMM loop shared by :class:`boltzgen.energy.EnergyModel`'s
in-process evaluator and its worker processes (:func:`worker_main`).

Kept free of torch so that a spawned worker process stays light; only numpy + openmm. The
Context comes from :func:`boltzgen.openmm_context.make_context`.
"""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np
import openmm
import openmm.unit as unit

from boltzgen.openmm_context import make_context
from boltzgen.processes import requests

#: Two atoms closer than this (nm) make a configuration invalid (energy +inf).
OVERLAP_NM = 0.01

# Status codes per frame.
OK, NONFINITE_INPUT, OVERLAP, NONFINITE_ENERGY = 0, 1, 2, 3

# OpenMM's SWIG-level functions, bound once for private_openmm_eval's per-frame loop; an
# OpenMM build without them leaves the public path only (raw_api_ok is then False)
try:
    from openmm import _openmm

    _set_positions = _openmm.Context_setPositions
    _get_state = _openmm.Context_getState
    _get_energy = _openmm.State_getPotentialEnergy
except (ImportError, AttributeError):  # pragma: no cover - depends on the OpenMM build
    _set_positions = _get_state = _get_energy = None
_KJ = unit.kilojoule_per_mole
_KJ_NM = unit.kilojoule_per_mole / unit.nanometer
_FORCES = openmm.State.Forces
_ENERGY = openmm.State.Energy
_ENERGY_FORCES = openmm.State.Energy + openmm.State.Forces


def screen(x: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Per-frame status before OpenMM sees the frame: non-finite or overlapping atoms.

    x: (B, n, 3) float64 nm. pairs: atom index pairs (i, j) for a test vectorised over the batch
    (small molecules, see :func:`overlap_pairs`), or None for a k-d tree per frame (large ones).
    Returns int8 status (B,).
    """
    status = np.zeros(len(x), dtype=np.int8)
    finite = np.isfinite(x).all(axis=(1, 2))
    status[~finite] = NONFINITE_INPUT
    if x.shape[1] < 2 or not finite.any():
        return status
    idx = None if finite.all() else np.flatnonzero(finite)
    xs = x if idx is None else x[idx]
    if pairs is not None:
        i, j = pairs
        step = max(1, 16_384 // len(i))  # small chunks stay in cache (no page faults)
        hit = np.empty(len(xs), dtype=bool)
        for s in range(0, len(xs), step):
            # Centred float32 in (3, B, n) layout: plenty for a 0.01 nm threshold, and the
            # fastest variant measured (about 0.7 us per 22-atom frame).
            c = xs[s : s + step]
            c = np.ascontiguousarray((c - c[:, :1]).transpose(2, 0, 1), dtype=np.float32)
            d = c[:, :, i] - c[:, :, j]
            np.square(d, out=d)
            hit[s : s + step] = (d[0] + d[1] + d[2]).min(axis=1) < OVERLAP_NM**2
    else:
        from scipy.spatial import cKDTree

        hit = np.array(
            [cKDTree(f).query_pairs(OVERLAP_NM, output_type="ndarray").size > 0 for f in xs],
            dtype=bool,
        )
    rows = np.flatnonzero(hit) if idx is None else idx[hit]
    status[rows] = OVERLAP
    return status


def overlap_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray] | None:
    """All atom pairs (i < j) for the batched overlap test; None above 300 atoms (k-d tree)."""
    if n_atoms > 300:
        return None
    i, j = np.triu_indices(n_atoms, k=1)
    return i.astype(np.intp), j.astype(np.intp)


def _public_eval(context: openmm.Context, xb: np.ndarray, forces: bool, out: np.ndarray) -> float:
    """One frame through OpenMM's public Python API (kJ/mol, kJ/mol/nm)."""
    context.setPositions(xb)
    state = context.getState(energy=True, forces=forces)
    if forces:
        out[...] = state.getForces(asNumpy=True).value_in_unit(_KJ_NM)
    return state.getPotentialEnergy().value_in_unit(_KJ)


def private_openmm_eval(context: openmm.Context, xb: np.ndarray, out: np.ndarray | None) -> float:
    """Energy (kJ/mol) of positions ``xb`` (n, 3) nm, forces (kJ/mol/nm) into ``out`` unless
    None: the one place boltzgen calls OpenMM's non-public API.

    It calls the C++ functions behind ``Context.setPositions``, ``Context.getState`` and
    ``State.getForces(asNumpy=True)`` through OpenMM's SWIG module (``_openmm``) and writes the
    forces straight into ``out`` (``State._getVectorAsNumpy``), skipping the public wrappers'
    unit checks, ``dir()`` lookups, Quantity arithmetic and array copies. Measured on ADP
    (22 atoms, Reference, 1000 frames, energies and forces, best of 9 interleaved rounds on a
    shared 2-core machine): 13 us per frame here against 31 us through the public API
    (``setPositions``, ``getState(energy=True, forces=True)``, ``getForces(asNumpy=True)``,
    ``value_in_unit``), 2.4x (median 3.2x); only the force read made public
    (``state.getForces(asNumpy=True)``) was 2.2-2.6x. The energy workers therefore keep it;
    :func:`raw_api_ok` checks it against the public API on each Context, and the public path
    (:func:`_public_eval`) is the fallback."""
    _set_positions(context, xb)
    state = _get_state(context, _ENERGY_FORCES if out is not None else _ENERGY, False, -1)
    if out is not None:
        state._getVectorAsNumpy(_FORCES, out)
    return _get_energy(state)


def raw_api_ok(context: openmm.Context) -> bool:
    """Whether :func:`private_openmm_eval` works and agrees exactly with the public API on this
    Context. Checked once per Context; the public API is the fallback."""
    try:
        n = context.getSystem().getNumParticles()
        xb = np.random.default_rng(0).uniform(0.0, 0.3 * max(n, 2) ** (1 / 3), size=(n, 3))
        f_pub, f_raw = np.empty((n, 3)), np.empty((n, 3))
        e_pub = _public_eval(context, xb, True, f_pub)
        e_raw = private_openmm_eval(context, xb, f_raw)
    except Exception:
        return False
    return bool(
        np.array_equal([e_pub], [e_raw], equal_nan=True)
        and np.array_equal(f_pub, f_raw, equal_nan=True)
    )


class Evaluator:
    """One OpenMM Context plus the per-batch screen and the evaluation loop.

    ``raw=True`` (when :func:`raw_api_ok`) evaluates frames with
    :func:`private_openmm_eval`: the same C++ calls as the public
    ``setPositions``/``getState``/``getForces(asNumpy=True)`` without their Python wrappers,
    2.4x as fast for a 22-atom molecule.
    """

    def __init__(self, system_xml: str, platform: str, properties: dict[str, str]) -> None:
        self.context = make_context(system_xml, platform=platform, properties=properties)
        self.pairs = overlap_pairs(self.context.getSystem().getNumParticles())
        self.raw = raw_api_ok(self.context)

    def __call__(
        self, x: np.ndarray, forces: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(status int8 (B,), energies (B,) kJ/mol, forces (B, n, 3) kJ/mol/nm or None) for
        C-contiguous float64 x (B, n, 3) nm. Invalid frames: +inf energy, zero forces."""
        status = screen(x, self.pairs)
        energy, force = evaluate(self.context, x, status, forces, raw=self.raw)
        return status, energy, force


def evaluate(
    context: openmm.Context,
    x: np.ndarray,
    status: np.ndarray,
    forces: bool,
    raw: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies (B,) kJ/mol and forces (B, n, 3) kJ/mol/nm for frames with status OK.

    Frames that are not OK get +inf energy and zero forces; a failing or non-finite OpenMM
    result sets the frame's status to NONFINITE_ENERGY in place. x: C-contiguous float64
    (B, n, 3) nm. The loop body is kept minimal; finiteness is checked afterwards, vectorised.
    """
    energy = np.full(len(x), np.inf)
    force = np.zeros_like(x) if forces else None
    todo = range(len(x)) if not status.any() else np.flatnonzero(status == OK).tolist()
    failed = []
    if raw:
        for b in todo:
            try:
                energy[b] = private_openmm_eval(context, x[b], force[b] if forces else None)
            except Exception:  # OpenMM refuses e.g. NaN coordinates on some platforms
                failed.append(b)
    else:
        scratch = np.empty(x.shape[1:])
        for b in todo:
            try:
                energy[b] = _public_eval(context, x[b], forces, force[b] if forces else scratch)
            except Exception:
                failed.append(b)
    bad = ~np.isfinite(energy)
    if forces:
        bad |= ~np.isfinite(force).all(axis=(1, 2))
    bad &= status == OK
    bad[failed] = True
    if bad.any():
        status[bad] = NONFINITE_ENERGY
        energy[bad] = np.inf
        if forces:
            force[bad] = 0.0
    return energy, force


def worker_main(conn: Any, system_xml: str, platform: str, properties: dict[str, str]) -> None:
    """Worker process loop: one Evaluator; requests (tag, x, forces) -> (tag, status, u, f).

    Replies ("error", tag, message) on failure; exits when the pipe closes or on ``None``.
    """
    try:
        evaluator = Evaluator(system_xml, platform, properties)
        conn.send(("ready", None, None, None))
    except Exception:
        conn.send(("error", None, traceback.format_exc(), None))
        return
    for tag, x, want_forces in requests(conn):
        try:
            status, energy, force = evaluator(
                np.ascontiguousarray(x, dtype=np.float64), want_forces
            )
            conn.send((tag, status, energy, force))
        except Exception:
            conn.send(("error", tag, traceback.format_exc(), None))
