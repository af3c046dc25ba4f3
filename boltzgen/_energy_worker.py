"""OpenMM evaluation loop shared by the in-process evaluator and the worker processes.

Kept free of torch so that a spawned worker process stays light; only numpy + openmm.
"""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np
import openmm

#: Two atoms closer than this (nm) make a configuration invalid (energy +inf).
OVERLAP_NM = 0.01

# Status codes per frame.
OK, NONFINITE_INPUT, OVERLAP, NONFINITE_ENERGY = 0, 1, 2, 3


def make_context(system_xml: str, platform: str, properties: dict[str, str]) -> openmm.Context:
    """An OpenMM Context for energy evaluation (the integrator is never stepped)."""
    system = openmm.XmlSerializer.deserialize(system_xml)
    integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(
        system, integrator, openmm.Platform.getPlatformByName(platform), dict(properties)
    )


def screen(x: np.ndarray, pairs: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Per-frame status before OpenMM sees the frame: non-finite or overlapping atoms.

    x: (B, n, 3) float64 nm. pairs: upper-triangle atom index pairs or None (skip the overlap test
    vectorised over pairs; large systems use a k-d tree per frame). Returns int8 (B,) status.
    """
    status = np.zeros(len(x), dtype=np.int8)
    finite = np.isfinite(x).all(axis=(1, 2))
    status[~finite] = NONFINITE_INPUT
    idx = np.flatnonzero(finite)
    if len(idx) == 0 or x.shape[1] < 2:
        return status
    if pairs is not None:
        i, j = pairs
        step = max(1, 2_000_000 // max(1, len(i)))
        for s in range(0, len(idx), step):
            sub = idx[s : s + step]
            d = x[sub][:, i] - x[sub][:, j]
            d2min = np.einsum("bpk,bpk->bp", d, d).min(axis=1)
            status[sub[d2min < OVERLAP_NM**2]] = OVERLAP
    else:
        from scipy.spatial import cKDTree

        for b in idx:
            if cKDTree(x[b]).query_pairs(OVERLAP_NM, output_type="ndarray").size:
                status[b] = OVERLAP
    return status


def overlap_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Index pairs for the vectorised overlap test (None above 300 atoms: k-d tree instead)."""
    if n_atoms > 300:
        return None
    i, j = np.triu_indices(n_atoms, k=1)
    return i.astype(np.intp), j.astype(np.intp)


def evaluate(
    context: openmm.Context,
    x: np.ndarray,
    status: np.ndarray,
    forces: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Energies (B,) kJ/mol and forces (B, n, 3) kJ/mol/nm for frames with status OK.

    Frames that are not OK get +inf energy and zero forces; a non-finite OpenMM result sets the
    frame's status to NONFINITE_ENERGY in place. x must be C-contiguous float64 (B, n, 3) nm.
    """
    n = len(x)
    energy = np.full(n, np.inf)
    force = np.zeros_like(x) if forces else None
    set_positions = context.setPositions
    get_state = context.getState
    for b in range(n):
        if status[b]:
            continue
        try:
            set_positions(x[b])
            state = get_state(getEnergy=True, getForces=forces)
            e = state.getPotentialEnergy()._value
            if forces:
                f = state.getForces(asNumpy=True)._value
        except Exception:  # OpenMM refuses e.g. NaN coordinates on some platforms
            status[b] = NONFINITE_ENERGY
            continue
        if e != e or e in (np.inf, -np.inf):
            status[b] = NONFINITE_ENERGY
            continue
        if forces:
            if not np.isfinite(f).all():
                status[b] = NONFINITE_ENERGY
                continue
            force[b] = f
        energy[b] = e
    return energy, force


def worker_main(conn: Any, system_xml: str, platform: str, properties: dict[str, str]) -> None:
    """Worker process loop: one Context; requests (tag, x, forces) -> (tag, status, u, f).

    Replies ("error", tag, message) on failure; exits when the pipe closes or on ``None``.
    """
    try:
        context = make_context(system_xml, platform, properties)
        pairs = overlap_pairs(context.getSystem().getNumParticles())
        conn.send(("ready", None, None, None))
    except Exception:
        conn.send(("error", None, traceback.format_exc(), None))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        tag, x, want_forces = msg
        try:
            x = np.ascontiguousarray(x, dtype=np.float64)
            status = screen(x, pairs)
            energy, force = evaluate(context, x, status, want_forces)
            conn.send((tag, status, energy, force))
        except Exception:
            conn.send(("error", tag, traceback.format_exc(), None))
