r"""Slice mappings from all-atom configurations to coarse-grained (CG) beads, and their force map.

A slice mapping keeps a subset of atoms as beads: ``R_I = x_{a_I}`` (bead I is atom a_I).

Force map (what :meth:`Mapping.map_forces` returns). A force map is *valid* when its
conditional mean given the CG configuration R is the mean force, ``E[F_I | R] = -dA/dR_I``
with the potential of mean force ``A(R) = -kT log int delta(M(x) - R) exp(-U(x)/kT) dx``
(Noid et al., J. Chem. Phys. 128, 244114 (2008); Kraemer et al., "Statistically optimal force
aggregation for coarse-graining molecular dynamics", J. Phys. Chem. Lett. 2023). Then force
matching on mapped forces has the mean force as its minimiser.

* Without constraints, the other atoms' coordinates y are independent of the bead coordinates:
  x = (R, y), so ``A(R) = -kT log int exp(-U(R, y)/kT) dy`` and
  ``dA/dR_I = < dU/dx_{a_I} >_{y|R} = -< f_{a_I} >_{y|R}``. The plain slice, the force on the
  bead atom itself, is a valid force map.
* With holonomic constraints (e.g. OpenMM's ``constraints="hbonds"``) an atom k constrained to a
  bead atom moves with it: on the constrained manifold x_k = R_I + r_k(w) with w independent of
  R (the constraint metric depends only on relative positions), so
  ``dA/dR_I = -< sum_{k in G_I} f_k >`` where G_I is the bead atom plus every atom connected to
  it through constraints, and f are the force-field forces (OpenMM's reported forces, without
  constraint forces). The bead atom's force alone would miss the forces on its constrained
  partners and is *not* valid then.

Implemented: the constraint-aware slice map, ``F_I = sum_{k in G_I} f_k``; with no constraints
G_I = {a_I} and it is the plain slice. Two beads in one constrained group (a constrained CG
distance) are rejected. Kraemer et al. also optimise the aggregation weights for lower variance
(any map with ``sum_i d_Ii c_Ji = delta_IJ`` on the slice that leaves constrained groups intact
is valid); this module implements the basic map only, which is valid but noisier.

Units: positions nm, forces kJ/mol/nm, masses g/mol (amu).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mdtraj
import numpy as np
import torch

from boltzgen.cg.system import CGSystem
from boltzgen.coordinates.topology import as_mdtraj_topology
from boltzgen.errors import InputError, ShapeError

__all__ = ["CAP_BEADS", "Mapping"]

#: backbone beads of cap residues: the atoms of the peptide bond to the neighbouring residue
CAP_BEADS = {"ACE": ("C",), "NME": ("N",), "NHE": ("N",), "NH2": ("N",), "NMA": ("N",)}
_BACKBONE = ("N", "CA", "C")


def _constraint_pairs(system: Any) -> list[tuple[int, int]]:
    omm = getattr(system, "openmm_system", None)
    if omm is None:
        return []
    pairs = []
    for i in range(omm.getNumConstraints()):
        a, b, _ = omm.getConstraintParameters(i)
        pairs.append((int(a), int(b)))
    return pairs


class Mapping:
    """Slice mapping of an all-atom system onto beads (one atom per bead).

    Args:
        system: a :class:`boltzgen.System` (constraints and temperature are read from it), an
            mdtraj / OpenMM topology, or anything with a ``.topology``.
        atoms: mdtraj selection string (e.g. ``"name CA"``) or atom indices, in bead order.
            Beads are joined by CG bonds between consecutive beads (a chain), unless ``bonds``.
        constraints: atom index pairs held at fixed distance; default: the OpenMM system's
            constraints (none for an unconstrained system or a bare topology).
        temperature: K; default ``system.temperature`` or 300.
        bonds: CG bonds as bead index pairs; default consecutive beads (0-1, 1-2, ...).

    Attributes:
        atoms (n_beads,) int64 bead atom indices; groups: per bead, the atoms whose forces the
        force map sums (bead atom first); masses (n_beads,) g/mol: summed over the group;
        n_atoms, n_beads, temperature, kT (kJ/mol), topology (all-atom, mdtraj).
    """

    def __init__(
        self,
        system: Any,
        atoms: str | Sequence[int] | np.ndarray,
        *,
        constraints: Sequence[tuple[int, int]] | None = None,
        temperature: float | None = None,
        bonds: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        top = as_mdtraj_topology(system)
        self.topology: mdtraj.Topology = top
        if isinstance(atoms, str):
            try:
                sel = top.select(atoms)
            except Exception as exc:  # mdtraj raises ValueError / its own parse errors
                raise InputError(f"invalid atom selection {atoms!r}: {exc}") from exc
            idx = np.asarray(sel, dtype=np.int64)
        else:
            idx = np.asarray(list(atoms), dtype=np.int64).reshape(-1)
        if idx.size < 1:
            raise InputError(f"the atom selection {atoms!r} selects no atoms")
        if idx.min() < 0 or idx.max() >= top.n_atoms:
            raise InputError(f"bead atoms out of range for {top.n_atoms} atoms: {idx.tolist()}")
        if len(set(idx.tolist())) != idx.size:
            raise InputError(f"bead atoms must be distinct, got {idx.tolist()}")
        self.atoms = idx
        self.n_atoms = int(top.n_atoms)
        self.n_beads = int(idx.size)
        if temperature is None:
            temperature = float(getattr(system, "temperature", 300.0))
        self.temperature = float(temperature)
        pairs = _constraint_pairs(system) if constraints is None else list(constraints)
        self.constraints = [(int(a), int(b)) for a, b in pairs]
        self.groups = self._groups(self.constraints)
        masses = np.array([a.element.mass if a.element is not None else 0.0 for a in top.atoms])
        self.masses = np.array([masses[g].sum() for g in self.groups], dtype=np.float64)
        if (self.masses <= 0).any():
            raise InputError("every bead needs a positive mass (atoms without element?)")
        self.bonds = (
            [(i, i + 1) for i in range(self.n_beads - 1)]
            if bonds is None
            else [(int(a), int(b)) for a, b in bonds]
        )
        self._matrix = np.zeros((self.n_beads, self.n_atoms))
        for bead, group in enumerate(self.groups):
            self._matrix[bead, group] = 1.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def backbone(cls, system: Any, **kwargs) -> Mapping:
        """Peptide backbone beads: N, CA, C of every amino-acid residue, and of the caps only the
        peptide-bond atoms (C of ACE, N of NME/NHE/NH2). For alanine dipeptide (ACE-ALA-NME)
        the beads are C(ACE), N, CA, C, N(NME) = atoms 4, 6, 8, 14, 16, and the CG dihedrals
        of consecutive beads are phi and psi."""
        top = as_mdtraj_topology(system)
        idx: list[int] = []
        for res in top.residues:
            names = CAP_BEADS.get(res.name) or (_BACKBONE if res.is_protein else ())
            by_name = {a.name: a.index for a in res.atoms}
            idx.extend(by_name[n] for n in names if n in by_name)
        if len(idx) < 3:
            raise InputError(f"backbone mapping found only {len(idx)} bead(s); not a peptide?")
        return cls(system, idx, **kwargs)

    @classmethod
    def select(cls, system: Any, beads: str | Sequence[int] | None = None, **kwargs) -> Mapping:
        """The mapping a user names: ``None`` -> :meth:`backbone`; an mdtraj selection string
        or atom indices -> those atoms as beads (the CLI's ``--beads`` and the cg jobs'
        ``beads``)."""
        return cls.backbone(system, **kwargs) if beads is None else cls(system, beads, **kwargs)

    def _groups(self, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
        parent = list(range(self.n_atoms))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for a, b in pairs:
            if not (0 <= a < self.n_atoms and 0 <= b < self.n_atoms):
                raise InputError(f"constraint ({a}, {b}) out of range for {self.n_atoms} atoms")
            parent[find(a)] = find(b)
        roots = [find(int(a)) for a in self.atoms]
        if len(set(roots)) != len(roots):
            raise InputError(
                "two bead atoms are joined by constraints (a constrained CG distance); the slice "
                "force map is not defined for that mapping"
            )
        groups = []
        for a, r in zip(self.atoms, roots, strict=True):
            rest = [i for i in range(self.n_atoms) if find(i) == r and i != a]
            groups.append(np.asarray([int(a), *rest], dtype=np.int64))
        return groups

    # ------------------------------------------------------------------ properties
    @property
    def kT(self) -> float:
        from boltzgen.constants import GAS_CONSTANT

        return GAS_CONSTANT * self.temperature

    @property
    def force_matrix(self) -> np.ndarray:
        """(n_beads, n_atoms) 0/1 matrix: F = force_matrix @ f (per Cartesian component)."""
        return self._matrix.copy()

    def cg_system(self) -> CGSystem:
        """The CG system: bead topology (one atom per bead, original names, elements and
        residues, bonds ``self.bonds``), temperature and bead masses."""
        top = mdtraj.Topology()
        chain = top.add_chain()
        residues: dict[int, Any] = {}
        beads = []
        for i in self.atoms:
            atom = self.topology.atom(int(i))
            res = atom.residue
            if res.index not in residues:
                residues[res.index] = top.add_residue(res.name, chain, resSeq=res.resSeq)
            elem = atom.element if atom.element is not None else mdtraj.element.carbon
            beads.append(top.add_atom(atom.name, elem, residues[res.index]))
        for a, b in self.bonds:
            top.add_bond(beads[a], beads[b])
        return CGSystem(top, self.temperature, self.masses.copy(), atoms=self.atoms.copy())

    # ------------------------------------------------------------------ maps
    def _check(self, x: Any, what: str) -> Any:
        if hasattr(x, "xyz"):
            x = x.xyz
        if not torch.is_tensor(x):
            x = np.asarray(x)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1] != self.n_atoms or x.shape[2] != 3:
            raise ShapeError(f"{what} must be (B, {self.n_atoms}, 3), got {tuple(x.shape)}")
        return x

    def map_positions(self, x: Any) -> Any:
        """All-atom positions (B, n_atoms, 3) nm (NumPy, torch or mdtraj.Trajectory) ->
        bead positions (B, n_beads, 3) nm (torch in, torch out)."""
        x = self._check(x, "positions")
        if torch.is_tensor(x):
            return x[:, torch.as_tensor(self.atoms, device=x.device)]
        return x[:, self.atoms]

    def map_forces(self, f: Any) -> Any:
        """All-atom forces (B, n_atoms, 3) kJ/mol/nm -> bead forces (B, n_beads, 3): the sum
        over each bead's constraint group (the bead atom alone without constraints); see the
        module docstring for why this is a valid force map."""
        f = self._check(f, "forces")
        if torch.is_tensor(f):
            m = torch.as_tensor(self._matrix, dtype=f.dtype, device=f.device)
            return torch.einsum("ja,bac->bjc", m, f)
        if all(len(g) == 1 for g in self.groups):
            return f[:, self.atoms]
        return np.einsum("ja,bac->bjc", self._matrix.astype(f.dtype), f)

    def __repr__(self) -> str:
        return (
            f"Mapping({self.n_beads} beads of {self.n_atoms} atoms: {self.atoms.tolist()}, "
            f"T={self.temperature} K)"
        )
