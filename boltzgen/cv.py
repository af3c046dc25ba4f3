"""Collective variables: callables positions (n, n_atoms, 3) nm -> (n,) values.

``dihedral(system, "phi")`` picks a named backbone / side-chain dihedral from the topology
(mdtraj's atom definitions, so the values equal ``mdtraj.compute_phi`` etc.). A CV works on
NumPy arrays, mdtraj trajectories and torch tensors (differentiable, for biasing or training).

CV names: ``"phi"``, ``"psi"``, ``"omega"``, ``"chi1"`` ... ``"chi4"`` alone mean the first
residue along the chain that has that dihedral; ``"phi:2"``, ``"psi:3"``, ``"chi1:2"`` mean the
dihedral of the residue whose **PDB residue number** is 2 (mdtraj ``Residue.resSeq``, the number
in labels such as ``ALA2``; not the 0-based topology index). A dihedral belongs to the residue of
its second atom, following mdtraj's definitions: phi = C(i-1)-N(i)-CA(i)-C(i) and
psi = N(i)-CA(i)-C(i)-N(i+1) belong to residue i, omega = CA(i)-C(i)-N(i+1)-CA(i+1) to residue i.
For alanine dipeptide (ACE1-ALA2-NME3) ``"phi"`` and ``"phi:2"`` are the same dihedral.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mdtraj
import numpy as np
import torch

from boltzgen.coordinates import geometry
from boltzgen.coordinates.dihedrals import DIHEDRAL_NAMES, dihedral_indices
from boltzgen.coordinates.topology import as_mdtraj_topology
from boltzgen.errors import InputError, ShapeError

__all__ = [
    "DIHEDRAL_NAMES",
    "backbone_state_labels",
    "RING_LOCKED_PHI",
    "Dihedral",
    "backbone_dihedrals",
    "dihedral",
    "parse_cv_name",
    "state_dihedrals",
]

# residues whose ring closes onto the backbone N and pins phi near -65 degrees (no phi > 0
# state exists); their backbone basins differ in psi (alpha vs polyproline II)
RING_LOCKED_PHI = frozenset({"PRO", "HYP"})

_RESIDUE_NUMBER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Dihedral:
    """Dihedral angle of four atoms, in radians in [-pi, pi] (IUPAC sign, as mdtraj).

    Computed by :func:`boltzgen.coordinates.geometry.dihedral` (NaN-safe, differentiable) for
    NumPy and torch input alike. Attributes: atoms (4 atom indices), name (for labels, e.g.
    ``"phi:2"``), period = 2 pi (periodic CV).
    """

    atoms: tuple[int, int, int, int]
    name: str = "dihedral"
    period: float = 2.0 * math.pi

    def __call__(self, positions: Any) -> Any:
        """positions (n, n_atoms, 3) or (n_atoms, 3) nm (NumPy, torch or mdtraj.Trajectory)
        -> (n,) radians; torch in, torch out (with gradients); otherwise float64 NumPy."""
        if hasattr(positions, "xyz"):
            positions = positions.xyz
        is_torch = isinstance(positions, torch.Tensor)
        if is_torch:
            x = positions if positions.dim() == 3 else positions.unsqueeze(0)
        else:
            x = np.asarray(positions, dtype=np.float64)
            if x.ndim == 2:
                x = x[None]
        self._check(tuple(x.shape))
        if not is_torch:
            x = torch.from_numpy(np.require(x, requirements="W"))
        # component-first (3, n) points, as the geometry module expects
        value = geometry.dihedral(*(x[:, i, :].T for i in self.atoms))
        return value if is_torch else value.numpy()

    def _check(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3 or shape[2] != 3:
            raise ShapeError(f"positions must be (n, n_atoms, 3) nm, got {shape}")
        if max(self.atoms) >= shape[1]:
            raise ShapeError(f"dihedral atoms {self.atoms} out of range for {shape[1]} atoms")


def parse_cv_name(name: str) -> tuple[str, int | None]:
    """``"phi:2"`` -> ``("phi", 2)``; ``"psi"`` -> ``("psi", None)`` (case-insensitive).

    The number is a PDB residue number (mdtraj ``Residue.resSeq``). Raises :class:`InputError`
    for an unknown dihedral name or a residue number that is not an integer.
    """
    if not isinstance(name, str):
        raise InputError(f"a CV name must be a string such as 'phi' or 'phi:2', got {name!r}")
    angle, sep, residue = name.strip().partition(":")
    angle = angle.strip().lower()
    if angle not in DIHEDRAL_NAMES:
        raise InputError(
            f"unknown dihedral {angle!r} in CV name {name!r}; choose one of "
            f"{', '.join(DIHEDRAL_NAMES)}, optionally with a residue number (e.g. 'phi:2')"
        )
    if not sep:
        return angle, None
    residue = residue.strip()
    if not _RESIDUE_NUMBER.fullmatch(residue):
        raise InputError(
            f"the residue in CV name {name!r} must be an integer PDB residue number "
            f"(e.g. '{angle}:2'), got {residue!r}"
        )
    return angle, int(residue)


def _dihedrals_by_residue(
    top: mdtraj.Topology, angle: str
) -> list[tuple[tuple[int, int, int, int], mdtraj.core.topology.Residue]]:
    """Every ``angle`` dihedral of ``top`` with the residue it belongs to (that of its second
    atom), in chain order."""
    return [
        (tuple(int(a) for a in q), top.atom(int(q[1])).residue)
        for q in dihedral_indices(top, angle)
    ]


def _label(residue: mdtraj.core.topology.Residue) -> str:
    return f"{residue} (chain {residue.chain.index})"


def dihedral(system_or_topology: Any, name: str | Sequence[int], index: int = 0) -> Dihedral:
    """A dihedral CV from a System, mdtraj/OpenMM topology or trajectory.

    Args:
        name: phi, psi, omega, chi1..chi4 (mdtraj definitions; e.g. phi = C(i-1)-N-CA-C) for
            the first residue that has it, the same with a PDB residue number (``"phi:2"``,
            ``"chi1:3"``; see the module docstring), or four atom indices.
        index: which occurrence along the chain (0 = first residue that has it) for a name
            without a residue number.

    Raises:
        InputError: bad name (see :func:`parse_cv_name`), no such dihedral in the topology, or
            the numbered residue lacks it (the message names the residues that have it) or its
            number is shared by several residues with that dihedral (use atom indices then).
    """
    if not isinstance(name, str):
        atoms = tuple(int(a) for a in name)
        if len(atoms) != 4 or len(set(atoms)) != 4 or min(atoms) < 0:
            raise InputError(f"a dihedral needs 4 distinct atom indices, got {name!r}")
        return Dihedral(atoms, name="dihedral" + str(atoms))
    angle, number = parse_cv_name(name)
    top = as_mdtraj_topology(system_or_topology)
    found = _dihedrals_by_residue(top, angle)
    if not found:
        raise InputError(f"the topology has no {angle} dihedral")
    if number is None:
        if not -len(found) <= int(index) < len(found):
            raise InputError(f"{angle} index {index} out of range: the topology has {len(found)}")
        return Dihedral(found[int(index)][0], name=angle)
    if int(index) != 0:
        raise InputError(
            f"give either a residue number in the name ({name!r}) or an index ({index}), not both"
        )
    hits = [(atoms, res) for atoms, res in found if res.resSeq == number]
    if len(hits) == 1:
        return Dihedral(hits[0][0], name=f"{angle}:{number}")
    have = ", ".join(str(res) for _, res in found)
    if len(hits) > 1:
        raise InputError(
            f"CV name {name!r} is ambiguous: residue number {number} is used by "
            f"{', '.join(_label(res) for _, res in hits)}; give the four atom indices instead"
        )
    numbered = [_label(r) for r in top.residues if r.resSeq == number]
    what = f"residue {' / '.join(numbered)} has" if numbered else f"no residue numbered {number}:"
    raise InputError(f"{what} no {angle} dihedral; residues with {angle} (PDB numbers): {have}")


def backbone_dihedrals(system_or_topology: Any) -> dict[str, Dihedral]:
    """Every backbone phi and psi of the molecule by residue: ``{"phi:2": ..., "psi:2": ...,
    "phi:3": ..., ...}`` in chain order (phi before psi within a residue), keys as accepted by
    :func:`dihedral` (PDB residue numbers). Empty for a molecule without a peptide backbone.

    Raises:
        InputError: residue numbers repeat (several chains numbered alike), so names would be
            ambiguous.
    """
    top = as_mdtraj_topology(system_or_topology)
    entries = []
    for angle in ("phi", "psi"):
        for atoms, res in _dihedrals_by_residue(top, angle):
            entries.append((res.index, angle == "psi", f"{angle}:{res.resSeq}", atoms, res))
    out: dict[str, Dihedral] = {}
    owner: dict[str, Any] = {}
    for _, _, key, atoms, res in sorted(entries, key=lambda e: (e[0], e[1])):
        if key in out:
            raise InputError(
                f"residue number {res.resSeq} is used by {_label(owner[key])} and {_label(res)}: "
                "backbone dihedral names would be ambiguous"
            )
        out[key] = Dihedral(atoms, name=key)
        owner[key] = res
    return out


def state_dihedrals(system_or_topology: Any) -> dict[str, Dihedral]:
    """One backbone dihedral per residue whose sign separates its backbone basins: phi
    (phi >= 0: alpha-L / C7ax, phi < 0: beta / C7eq / alpha-R), except for residues in
    :data:`RING_LOCKED_PHI` (proline), whose ring pins phi, where it is psi (psi >= 0:
    polyproline II / beta, psi < 0: alpha). Keys as :func:`backbone_dihedrals` (e.g.
    ``{"phi:2": ..., "psi:3": ...}``) in chain order; residues without a phi are skipped."""
    top = as_mdtraj_topology(system_or_topology)
    bb = backbone_dihedrals(top)
    out: dict[str, Dihedral] = {}
    for name in bb:
        angle, number = parse_cv_name(name)
        if angle != "phi":
            continue
        res = top.atom(bb[name].atoms[1]).residue
        psi = f"psi:{number}"
        key = psi if res.name.upper() in RING_LOCKED_PHI and psi in bb else name
        out[key] = bb[key]
    return out


def backbone_state_labels(system, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Label frames by the sign pattern of every residue's state dihedral
    (:func:`boltzgen.cv.state_dihedrals`: phi, or psi for proline).

    Returns (labels (N,) strings such as ``"+-"`` with one character per residue in chain
    order, ``+`` for an angle in [0, pi) and ``-`` otherwise; the dihedrals' names in that
    order, e.g. ``["phi:2", "psi:3"]``). A molecule without a backbone gets one label ``""``.
    """
    dihedrals = state_dihedrals(system)
    n = len(positions)
    if not dihedrals:
        return np.full(n, "", dtype=object), []
    signs = np.stack([d(positions) >= 0.0 for d in dihedrals.values()], axis=1)
    labels = np.array(["".join("+" if s else "-" for s in row) for row in signs], dtype=object)
    return labels, list(dihedrals)
