"""The topology adapter: whatever the caller holds (mdtraj or OpenMM topology, a System, a
trajectory, a PDBFile) -> an ``mdtraj.Topology``. Its own module so that the Z-matrix and the
named dihedrals both use it without importing each other."""

from __future__ import annotations

import mdtraj

from boltzgen.errors import InputError


def as_mdtraj_topology(topology) -> mdtraj.Topology:
    """Accept an ``mdtraj.Topology``, an ``openmm.app.Topology``, or an object with a
    ``.topology`` attribute holding one (``boltzgen.System``, ``mdtraj.Trajectory``, ``PDBFile``)."""
    if isinstance(topology, mdtraj.Topology):
        return topology
    inner = getattr(topology, "topology", None)
    if inner is not None and inner is not topology:
        return as_mdtraj_topology(inner)
    if hasattr(topology, "atoms") and hasattr(topology, "bonds") and hasattr(topology, "residues"):
        return mdtraj.Topology.from_openmm(topology)
    raise InputError(
        f"expected an mdtraj.Topology or openmm.app.Topology, got {type(topology).__name__}"
    )
