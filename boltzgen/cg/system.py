"""The coarse-grained system: bead topology, temperature and bead masses.

The bead topology is an ``mdtraj.Topology`` with one atom per bead (the bead atom's name,
element and residue) and CG bonds, so ``InternalCoordinates.from_topology`` builds the chain's
Z-matrix from it and ``mdtraj`` writes and reads CG trajectories. For a peptide backbone mapping
the bead names are N, CA, C in their residues, so mdtraj (and ``boltzgen.cv.dihedral``) find
phi and psi on the beads too.
"""

from __future__ import annotations

from typing import Any

import mdtraj
import numpy as np

from boltzgen.errors import InputError

__all__ = ["CGSystem", "dihedrals"]


class CGSystem:
    """Beads with a topology, temperature (K) and masses (g/mol).

    Attributes:
        topology: mdtraj.Topology, one atom per bead, CG bonds as topology bonds.
        temperature: K. kT: kJ/mol. masses: (n_beads,). n_beads == n_atoms (the name the
            library's training code uses).
        bonds (n_b, 2), angles (n_a, 3), dihedral_quads (n_d, 4): bead index tuples from the
            bond graph (angles i-j-k and dihedrals i-j-k-l along bonds, deterministic order);
            for a chain they are the consecutive beads.
        atoms: (n_beads,) all-atom indices of the bead atoms, if known.
    """

    def __init__(
        self,
        topology: mdtraj.Topology,
        temperature: float,
        masses: Any,
        atoms: Any = None,
    ) -> None:
        self.topology = topology
        self.temperature = float(temperature)
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            raise InputError(f"temperature must be positive, got {temperature}")
        self.masses = np.asarray(masses, dtype=np.float64).reshape(-1)
        if self.masses.shape != (topology.n_atoms,) or (self.masses <= 0).any():
            raise InputError(f"need one positive mass per bead ({topology.n_atoms})")
        self.atoms = None if atoms is None else np.asarray(atoms, dtype=np.int64)
        n = topology.n_atoms
        adj: list[list[int]] = [[] for _ in range(n)]
        bonds = []
        for b in topology.bonds:
            i, j = sorted((b[0].index, b[1].index))
            if i != j and j not in adj[i]:
                adj[i].append(j)
                adj[j].append(i)
                bonds.append((i, j))
        for lst in adj:
            lst.sort()
        angles = [(i, j, k) for j in range(n) for i in adj[j] for k in adj[j] if i < k]
        quads = []
        for j, k in bonds:
            for i in adj[j]:
                for m in adj[k]:
                    if len({i, j, k, m}) == 4:
                        quads.append((i, j, k, m))
        self.bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        self.angles = np.asarray(sorted(angles, key=lambda t: (t[1], t[0], t[2])), np.int64)
        self.angles = self.angles.reshape(-1, 3)
        self.dihedral_quads = np.asarray(quads, dtype=np.int64).reshape(-1, 4)

    @property
    def n_beads(self) -> int:
        return int(self.topology.n_atoms)

    @property
    def n_atoms(self) -> int:
        return self.n_beads

    @property
    def kT(self) -> float:
        from boltzgen.constants import GAS_CONSTANT

        return GAS_CONSTANT * self.temperature

    def dihedrals(self, positions: Any) -> np.ndarray:
        """(N, n_d) radians of ``dihedral_quads`` for bead positions (N, n_beads, 3) nm."""
        return dihedrals(positions, self.dihedral_quads)

    # ------------------------------------------------------------------ serialisation
    def to_spec(self) -> dict[str, Any]:
        """JSON-able description (topology as tables) for :meth:`from_spec`."""
        top = self.topology
        return {
            "format": "boltzgen.cg.CGSystem/1",
            "temperature": self.temperature,
            "masses": self.masses.tolist(),
            "atoms": None if self.atoms is None else self.atoms.tolist(),
            "residues": [[r.name, int(r.resSeq)] for r in top.residues],
            "beads": [
                [a.name, a.element.symbol if a.element is not None else "C", a.residue.index]
                for a in top.atoms
            ],
            "bonds": [[int(b[0].index), int(b[1].index)] for b in top.bonds],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> CGSystem:
        if spec.get("format") != "boltzgen.cg.CGSystem/1":
            raise InputError("not a CG system spec (unknown format tag)")
        top = mdtraj.Topology()
        chain = top.add_chain()
        res = [top.add_residue(name, chain, resSeq=seq) for name, seq in spec["residues"]]
        beads = [
            top.add_atom(name, mdtraj.element.get_by_symbol(sym), res[r])
            for name, sym, r in spec["beads"]
        ]
        for a, b in spec["bonds"]:
            top.add_bond(beads[a], beads[b])
        return cls(top, spec["temperature"], spec["masses"], spec.get("atoms"))

    def __repr__(self) -> str:
        return f"CGSystem({self.n_beads} beads, {len(self.bonds)} bonds, T={self.temperature} K)"


def dihedrals(positions: Any, quads: Any) -> np.ndarray:
    """Dihedral angles (N, k) in radians in (-pi, pi] (IUPAC sign, as mdtraj) of positions
    (N, n, 3) (NumPy / torch / mdtraj) over atom quadruples (k, 4)."""
    if hasattr(positions, "xyz"):
        positions = positions.xyz
    if hasattr(positions, "detach"):
        positions = positions.detach().cpu().numpy()
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    q = np.asarray(quads, dtype=np.int64).reshape(-1, 4)
    p0, p1, p2, p3 = (x[:, q[:, i]] for i in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    y = np.linalg.norm(b1, axis=-1) * (b0 * n2).sum(-1)
    return np.arctan2(y, (n1 * n2).sum(-1))
