"""Internal coordinates derived from any topology, with exact log-Jacobians.

* :class:`InternalCoordinates` - x (B, n, 3) nm <-> z (bonds, angles, torsions [+ rigid DOFs]).
* :class:`BoxNormalizer`, :class:`ICNormalizer` - z -> u in [0, 1]^d (torus x box) with log-dets.
* :func:`dihedral_indices` - atom quadruples of named dihedrals (phi, psi, omega, chi1..chi4).
* :func:`build_zmatrix` - the Z-matrix construction itself.
"""

from __future__ import annotations

from boltzgen.coordinates.dihedrals import dihedral_indices
from boltzgen.coordinates.normalize import BoxNormalizer, ICNormalizer
from boltzgen.coordinates.transform import InternalCoordinates
from boltzgen.coordinates.zmatrix import ZMatrix, build_zmatrix

__all__ = [
    "BoxNormalizer",
    "ICNormalizer",
    "InternalCoordinates",
    "ZMatrix",
    "build_zmatrix",
    "dihedral_indices",
]
