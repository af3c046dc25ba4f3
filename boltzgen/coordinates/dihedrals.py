"""Atom index quadruples of named backbone / side-chain dihedrals, from mdtraj's definitions."""

from __future__ import annotations

import mdtraj
import numpy as np

from boltzgen.coordinates.topology import as_mdtraj_topology
from boltzgen.errors import InputError

_FUNCS = {
    "phi": mdtraj.compute_phi,
    "psi": mdtraj.compute_psi,
    "omega": mdtraj.compute_omega,
    "chi1": mdtraj.compute_chi1,
    "chi2": mdtraj.compute_chi2,
    "chi3": mdtraj.compute_chi3,
    "chi4": mdtraj.compute_chi4,
}

DIHEDRAL_NAMES = tuple(_FUNCS)


def dihedral_indices(topology, name: str) -> np.ndarray:
    """(k, 4) int64 atom indices of every dihedral called ``name`` in ``topology``.

    ``name`` is one of phi, psi, omega, chi1, chi2, chi3, chi4 (mdtraj's atom definitions,
    e.g. phi = C(i-1)-N-CA-C, psi = N-CA-C-N(i+1)). k may be 0 (e.g. chi1 of glycine-only
    chains). Accepts an mdtraj or OpenMM topology.
    """
    key = str(name).lower()
    if key not in _FUNCS:
        raise InputError(f"unknown dihedral {name!r}; choose one of {', '.join(DIHEDRAL_NAMES)}")
    top = as_mdtraj_topology(topology)
    traj = mdtraj.Trajectory(np.zeros((1, top.n_atoms, 3), dtype=np.float32), top)
    idx, _ = _FUNCS[key](traj)
    return np.asarray(idx, dtype=np.int64).reshape(-1, 4)
