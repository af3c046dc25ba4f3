"""Z-matrix construction from the bond graph of an mdtraj / OpenMM topology.

Every atom is placed from three already-placed atoms: its bond partner ``p`` (its parent in a
spanning tree of the bond graph), an angle partner ``q`` and a torsion partner ``r``. The tree is
grown by a lexicographic Dijkstra from a root atom with the cost
``(hydrogens on path, non-backbone bonds on path, bonds on path)``, so that

* all heavy atoms are placed before any hydrogen (hydrogens are leaves),
* the tree follows the peptide backbone (N, CA, C and the ACE/NME methyl carbons) and then the
  side-chain chi paths before other bonds (disulfides, the proline N-CD bond), so backbone and
  chi atoms get *proper* torsions along the chain: for a peptide phi = C(i-1)-N-CA-C,
  psi = N-CA-C-N(i+1), omega = CA-C-N(i+1)-CA(i+1) and chi1..chi4 are exact z columns,
* ring-closure bonds are not tree edges; they are simply not degrees of freedom,
* ties are broken by atom index, so the result is deterministic.

Torsion partners: the first child of an atom gets the proper torsion a-p-q-r along the tree
(r = parent of q). With ``torsions="sibling"`` (default) a later child of ``p`` that is not a
backbone atom is placed relative to the first-placed child ``s`` of ``p``: the torsion
a-p-q-s is then an improper-like "relative" torsion (about +-120 deg for sp3 centres, 180 deg for
planar groups) that hardly moves, e.g. methyl hydrogens 2 and 3 follow hydrogen 1, CB follows
the backbone C (fixing the chirality of CA). ``torsions="proper"`` uses r = parent of q for
every atom where it exists.

Linear groups (nitriles, alkynes) whose angle partner is collinear are not handled specially:
their torsions are ill defined, as in every Z-matrix.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import mdtraj
import numpy as np

from boltzgen.coordinates.dihedrals import dihedral_indices
from boltzgen.coordinates.topology import as_mdtraj_topology
from boltzgen.errors import InputError, TopologyError

#: atom names that form the chain the spanning tree prefers (in protein residues and caps)
BACKBONE_NAMES = frozenset({"N", "CA", "C", "CH3"})
_CAP_RESIDUES = frozenset({"ACE", "NME", "NHE", "NH2"})


@dataclass(frozen=True)
class ZMatrix:
    """A Z-matrix in placement order.

    Attributes:
        rows: (n_atoms, 4) int64, row k = [atom, bond partner, angle partner, torsion partner]
            of the k-th placed atom; -1 where a partner does not exist (rows 0, 1, 2).
        levels: (n_atoms,) int64 placement level of each row: every atom of level L has all its
            partners in levels < L, so a level is placed in one vectorised step.
        pseudo_bonds: bonds added by ``fragments="connect"`` (atom index pairs).
    """

    rows: np.ndarray
    levels: np.ndarray
    pseudo_bonds: tuple[tuple[int, int], ...] = field(default=())

    @property
    def n_atoms(self) -> int:
        return int(self.rows.shape[0])

    def find_torsion_row(self, quad: Sequence[int]) -> int | None:
        """Row index whose (atom, p, q, r) equals ``quad`` or its reverse, else None."""
        q = tuple(int(i) for i in quad)
        for cand in (q, q[::-1]):
            hit = np.nonzero((self.rows == np.asarray(cand)).all(axis=1))[0]
            if hit.size and hit[0] >= 3:
                return int(hit[0])
        return None


def _is_backbone(atom) -> bool:
    res = atom.residue
    return atom.name in BACKBONE_NAMES and (res.is_protein or res.name in _CAP_RESIDUES)


def _components(n: int, adj: list[list[int]]) -> list[list[int]]:
    seen = np.zeros(n, bool)
    comps = []
    for s in range(n):
        if seen[s]:
            continue
        stack, comp = [s], []
        seen[s] = True
        while stack:
            u = stack.pop()
            comp.append(u)
            for v in adj[u]:
                if not seen[v]:
                    seen[v] = True
                    stack.append(v)
        comps.append(sorted(comp))
    return comps


def _describe(top: mdtraj.Topology, comp: list[int]) -> str:
    res = sorted({str(top.atom(i).residue) for i in comp})
    shown = ", ".join(res[:4]) + (", ..." if len(res) > 4 else "")
    return f"{len(comp)} atoms starting at atom {comp[0]} ({shown})"


def _connect(
    top: mdtraj.Topology, adj: list[list[int]], positions: np.ndarray, heavy: np.ndarray
) -> list[tuple[int, int]]:
    """Join fragments by pseudo-bonds between their nearest atoms (heavy atoms preferred)."""
    added: list[tuple[int, int]] = []
    comps = _components(top.n_atoms, adj)
    main = list(comps[0])
    rest = [list(c) for c in comps[1:]]
    while rest:
        best = None
        for ci, comp in enumerate(rest):
            a_set = [i for i in main if heavy[i]] or main
            b_set = [i for i in comp if heavy[i]] or comp
            d = np.linalg.norm(positions[a_set][:, None] - positions[b_set][None], axis=-1)
            k = np.unravel_index(np.argmin(d), d.shape)
            cand = (float(d[k]), ci, a_set[k[0]], b_set[k[1]])
            if best is None or cand < best:
                best = cand
        _, ci, i, j = best
        adj[i].append(j)
        adj[j].append(i)
        added.append((min(i, j), max(i, j)))
        main = sorted(main + rest.pop(ci))
    return added


def build_zmatrix(
    topology,
    *,
    positions: np.ndarray | None = None,
    fragments: str = "error",
    torsions: str = "sibling",
) -> ZMatrix:
    """Build a deterministic Z-matrix from the bond graph of ``topology``.

    Args:
        topology: ``mdtraj.Topology`` or ``openmm.app.Topology`` with bonds (PDB CONECT records
            and standard residues give them).
        positions: (n_atoms, 3) nm, only needed for ``fragments="connect"``.
        fragments: what to do with a bond graph of several connected components:
            ``"error"`` (default) raises ``TopologyError``; ``"connect"`` joins each fragment
            to the rest by a pseudo-bond between the nearest atoms (heavy atoms preferred).
        torsions: ``"sibling"`` (default) or ``"proper"``, see the module docstring.

    Raises:
        TopologyError: fewer than 3 atoms, disconnected fragments with ``fragments="error"``.
        InputError: bad option values, ``"connect"`` without positions.
    """
    top = as_mdtraj_topology(topology)
    if fragments not in ("error", "connect"):
        raise InputError(f"fragments must be 'error' or 'connect', got {fragments!r}")
    if torsions not in ("sibling", "proper"):
        raise InputError(f"torsions must be 'sibling' or 'proper', got {torsions!r}")
    n = top.n_atoms
    if n < 3:
        raise TopologyError(f"internal coordinates need at least 3 atoms, the topology has {n}")
    atoms = list(top.atoms)
    heavy = np.array([a.element is None or a.element.symbol != "H" for a in atoms])
    backbone = np.array([_is_backbone(a) for a in atoms])
    # preferred tree edges: backbone bonds and bonds along side-chain chi dihedrals (so that,
    # e.g., the proline ring is closed at N-CD and chi1 = N-CA-CB-CG stays a torsion)

    preferred: set[tuple[int, int]] = set()
    proper = backbone.copy()  # atoms that must get the proper torsion along the tree
    for name in ("chi1", "chi2", "chi3", "chi4"):
        for quad in dihedral_indices(top, name):
            proper[quad[0]] = proper[quad[3]] = True
            for i, j in zip(quad[:-1], quad[1:], strict=True):
                preferred.add((min(i, j), max(i, j)))
    adj: list[list[int]] = [[] for _ in range(n)]
    for b in top.bonds:
        i, j = b[0].index, b[1].index
        if i != j and j not in adj[i]:
            adj[i].append(j)
            adj[j].append(i)

    pseudo: list[tuple[int, int]] = []
    comps = _components(n, adj)
    if len(comps) > 1:
        if fragments == "error":
            desc = "; ".join(_describe(top, c) for c in comps[:5])
            raise TopologyError(
                f"the bond graph has {len(comps)} disconnected fragments ({desc}"
                f"{'; ...' if len(comps) > 5 else ''}); internal coordinates need one connected "
                "molecule. Add the missing bonds (CONECT records), remove the extra molecules, "
                "or pass fragments='connect' with positions to join them by pseudo-bonds."
            )
        if positions is None:
            raise InputError("fragments='connect' needs positions (n_atoms, 3) in nm")
        positions = np.asarray(positions, dtype=float).reshape(n, 3)
        pseudo = _connect(top, adj, positions, heavy)
    for lst in adj:
        lst.sort()

    # root: first backbone atom if any, else the first heavy atom, else atom 0
    if backbone.any():
        root = int(np.nonzero(backbone)[0][0])
    elif heavy.any():
        root = int(np.nonzero(heavy)[0][0])
    else:
        root = 0

    # lexicographic Dijkstra: cost = (hydrogens on path, non-backbone bonds, bonds)
    parent = np.full(n, -1, dtype=np.int64)
    rank = np.full(n, -1, dtype=np.int64)
    order: list[int] = []
    heap = [((0, 0, 0), root, -1)]
    while heap:
        cost, u, par = heapq.heappop(heap)
        if rank[u] >= 0:
            continue
        rank[u] = len(order)
        order.append(u)
        parent[u] = par
        for v in adj[u]:
            if rank[v] < 0:
                step = (
                    int(not heavy[v]),
                    int(
                        not (backbone[u] and backbone[v])
                        and (min(u, v), max(u, v)) not in preferred
                    ),
                    1,
                )
                heapq.heappush(heap, (tuple(c + s for c, s in zip(cost, step, strict=True)), v, u))

    children: list[list[int]] = [[] for _ in range(n)]
    for a in order[1:]:
        children[int(parent[a])].append(a)  # in placement order

    rows = np.full((n, 4), -1, dtype=np.int64)
    levels = np.zeros(n, dtype=np.int64)
    level_of = np.zeros(n, dtype=np.int64)
    for k, a in enumerate(order):
        rows[k, 0] = a
        if k == 0:
            continue
        p = int(parent[a])
        if k == 1:
            rows[k, 1] = p
            level_of[a] = 1
            levels[k] = 1
            continue
        if k == 2:
            q = order[1] if p == order[0] else order[0]
            rows[k, 1:3] = (p, q)
            level_of[a] = 2
            levels[k] = 2
            continue
        placed = [c for c in children[p] if rank[c] < k]
        q = int(parent[p]) if parent[p] >= 0 else placed[0]
        r = -1
        if torsions == "sibling" and not proper[a]:
            sib = [c for c in placed if c != q]
            if sib:
                r = sib[0]
        if r < 0:
            gp = int(parent[q])
            if gp >= 0 and gp not in (a, p):
                r = gp
            else:
                cand = [c for c in children[q] if rank[c] < k and c not in (a, p)]
                cand += [c for c in placed if c not in (a, q)]
                cand += [c for c in order[:k] if c not in (a, p, q)]
                r = cand[0]
        rows[k, 1:] = (p, q, r)
        lv = 1 + max(level_of[p], level_of[q], level_of[r])
        level_of[a] = lv
        levels[k] = lv
    return ZMatrix(rows=rows, levels=levels, pseudo_bonds=tuple(pseudo))
