r"""Cartesian <-> internal coordinates with exact log-Jacobian determinants.

Layout of ``z`` (B, dim), columns grouped by kind, each group in Z-matrix placement order:

* ``bond_columns``    (n-1): bond lengths b_k (nm) of atoms 1..n-1,
* ``angle_columns``   (n-2): bond angles theta_k in [0, pi] (rad) of atoms 2..n-1,
* ``torsion_columns`` (n-3): torsions phi_k in [-pi, pi] (rad) of atoms 3..n-1,
* ``rigid="keep"`` only: ``translation_columns`` (3): position of the root atom (nm), and
  ``orientation_columns`` (3): (alpha, beta, gamma), the azimuth in [-pi, pi] and polar angle
  in [0, pi] of the direction of atom 1 from the root, and the rotation gamma in [-pi, pi] of
  atom 2 about that axis. alpha and gamma are circular, beta is not.

Log-determinants. Placing atom k from its three partners is a spherical-coordinate map, so
``dx_k = b_k^2 sin(theta_k) db_k dtheta_k dphi_k`` and the full Jacobian is triangular:

* ``rigid="keep"`` (bijective R^{3n} -> R^{3n}):
  ``log|det dz/dx| = -[ sum_{k>=1} 2 log b_k + sum_{k>=2} log sin theta_k + log sin beta ]``.
* ``rigid="remove"`` (canonical frame, dim 3n-6): x is written as x = g . x_c(z) with
  g = (R, t) in SE(3), and ``dx = J(z) dz dt dmu(R)`` where mu is the Haar measure of SO(3)
  (``dmu = sin beta dalpha dbeta dgamma``, total mass 8 pi^2). The returned
  ``logdet = -log J(z) = -[ sum_{k>=1} 2 log b_k + sum_{k>=2} log sin theta_k ]``, i.e. the
  keep-mode log-det *minus* its rigid-body part ``-log sin beta``. For a density p(x) that is
  invariant under rotations and translations (in a box of volume V),
  ``p_z(z) = 8 pi^2 V p(x(z)) exp(-logdet)``, so ``log p(x) = log p_z(z) + logdet + const``
  with const = -log(8 pi^2 V): the rigid-body volume factor's dependence on the first three
  atoms (b_1^2 b_2^2 sin theta_2) is inside ``logdet``. The inverse puts the root at the
  origin, atom 1 on +x and atom 2 in the xy plane (y > 0).

Singularities: bonds of length 0, angles of 0 or pi, and (keep mode) beta = 0 or pi make the
log-det -inf; values and gradients stay NaN-free (see ``geometry``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from boltzgen.coordinates import geometry as g
from boltzgen.coordinates.zmatrix import ZMatrix, build_zmatrix
from boltzgen.errors import InputError, ShapeError, TopologyError

_RIGID_MODES = ("remove", "keep")


def _tiny(t: torch.Tensor) -> float:
    return torch.finfo(t.dtype).tiny


class InternalCoordinates(nn.Module):
    """Bijection between Cartesian positions x (B, n_atoms, 3) nm and internal coordinates z.

    Build with :meth:`from_topology`. Index tensors are buffers, so ``.to(dtype/device)``,
    ``state_dict()`` and ``load_state_dict()`` work; :meth:`from_state_dict` rebuilds a module.

    Attributes:
        dim: number of columns of z (3n - 6 for "remove", 3n for "keep").
        n_atoms: number of atoms.
        rigid: "remove" or "keep".
        zmatrix: (n_atoms, 4) int64 buffer, rows [atom, bond, angle, torsion partner] in
            placement order, -1 where absent.
        bond_columns, angle_columns, torsion_columns: int64 buffers of z column indices.
        translation_columns, orientation_columns: int64 buffers (empty for "remove").
        circular: (dim,) bool buffer, True for periodic columns (torsions, alpha, gamma).
    """

    def __init__(self, zmatrix: ZMatrix | np.ndarray, rigid: str = "remove") -> None:
        super().__init__()
        if rigid not in _RIGID_MODES:
            raise InputError(f"rigid must be 'remove' or 'keep', got {rigid!r}")
        if isinstance(zmatrix, ZMatrix):
            rows = np.asarray(zmatrix.rows, dtype=np.int64)
        else:
            rows = np.asarray(zmatrix, dtype=np.int64)
        n = rows.shape[0]
        if rows.ndim != 2 or rows.shape[1] != 4 or n < 3:
            raise TopologyError(f"zmatrix must be (n_atoms >= 3, 4), got {rows.shape}")
        if sorted(rows[:, 0].tolist()) != list(range(n)):
            raise TopologyError("zmatrix column 0 must be a permutation of the atom indices")
        levels = np.zeros(n, dtype=np.int64)
        rank = np.empty(n, dtype=np.int64)
        rank[rows[:, 0]] = np.arange(n)
        for k in range(1, n):
            need = 1 if k == 1 else (2 if k == 2 else 3)
            refs = rows[k, 1 : 1 + need]
            if (refs < 0).any() or len(set(refs.tolist() + [rows[k, 0]])) != need + 1:
                raise TopologyError(f"zmatrix row {k} has invalid partners {rows[k].tolist()}")
            if (rank[refs] >= k).any():
                raise TopologyError(f"zmatrix row {k} refers to atoms placed after it")
            levels[k] = 1 + levels[rank[refs]].max()
        self.rigid = rigid
        self.n_atoms = n
        self.dim = 3 * n - 6 + (6 if rigid == "keep" else 0)
        nb, na, nt = n - 1, n - 2, n - 3
        self.register_buffer("zmatrix", torch.as_tensor(rows))
        self.register_buffer("bond_columns", torch.arange(0, nb))
        self.register_buffer("angle_columns", torch.arange(nb, nb + na))
        self.register_buffer("torsion_columns", torch.arange(nb + na, nb + na + nt))
        base = nb + na + nt
        if rigid == "keep":
            self.register_buffer("translation_columns", torch.arange(base, base + 3))
            self.register_buffer("orientation_columns", torch.arange(base + 3, base + 6))
        else:
            self.register_buffer("translation_columns", torch.zeros(0, dtype=torch.long))
            self.register_buffer("orientation_columns", torch.zeros(0, dtype=torch.long))
        circ = torch.zeros(self.dim, dtype=torch.bool)
        circ[self.torsion_columns] = True
        if rigid == "keep":
            circ[self.orientation_columns[0]] = True
            circ[self.orientation_columns[2]] = True
        self.register_buffer("circular", circ)
        t = torch.as_tensor(rows)
        # forward gathers (all atoms at once)
        self.register_buffer("_b_idx", t[1:, :2].clone())
        self.register_buffer("_a_idx", t[2:, :3].clone())
        self.register_buffer("_t_idx", t[3:, :4].clone())
        # inverse: rows of level >= 3 sorted by level (stable), with their z columns
        sel = np.nonzero(levels >= 3)[0]
        sel = sel[np.argsort(levels[sel], kind="stable")]
        self.register_buffer("_inv_rows", t[sel].clone())
        self.register_buffer("_inv_bcol", torch.as_tensor(sel - 1))
        self.register_buffer("_inv_acol", torch.as_tensor(nb + sel - 2))
        self.register_buffer("_inv_tcol", torch.as_tensor(nb + na + sel - 3))
        lv = levels[sel]
        bounds = np.concatenate([[0], np.nonzero(np.diff(lv))[0] + 1, [len(lv)]])
        self._level_slices = [
            (int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.levels = np.asarray(levels)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_topology(
        cls,
        topology,
        rigid: str = "remove",
        *,
        positions: np.ndarray | None = None,
        fragments: str = "error",
        torsions: str = "sibling",
    ) -> InternalCoordinates:
        """Z-matrix from the bond graph of an mdtraj/OpenMM topology (see ``build_zmatrix``)."""
        zm = build_zmatrix(topology, positions=positions, fragments=fragments, torsions=torsions)
        return cls(zm, rigid=rigid)

    @classmethod
    def from_state_dict(cls, state: dict) -> InternalCoordinates:
        """Rebuild from ``state_dict()`` output (the Z-matrix and mode are stored in it)."""
        rows = state["zmatrix"].cpu().numpy()
        rigid = "keep" if len(state["translation_columns"]) else "remove"
        ic = cls(rows, rigid=rigid)
        ic.load_state_dict(state)
        return ic

    # ------------------------------------------------------------------ lookup
    def torsion_column(self, quad: Sequence[int]) -> int:
        """z column of the torsion over atoms ``quad`` = (i, j, k, l) (or reversed).

        Raises TopologyError if that dihedral is not a torsion of this Z-matrix.
        """
        rows = self.zmatrix.cpu().numpy()
        k = ZMatrix(rows, self.levels).find_torsion_row(quad)
        if k is None:
            raise TopologyError(f"dihedral {tuple(int(i) for i in quad)} is not a Z-matrix torsion")
        return int(self.torsion_columns[k - 3])

    def torsion_columns_of(self, quads: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`torsion_column` over a (k, 4) array -> (k,) int64."""
        return np.array([self.torsion_column(q) for q in np.asarray(quads)], dtype=np.int64)

    # ------------------------------------------------------------------ checks
    def _check_x(self, x) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.ndim != 3 or x.shape[1] != self.n_atoms or x.shape[2] != 3:
            raise ShapeError(
                f"positions must be (B, {self.n_atoms}, 3) in nm, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise InputError(f"positions must be floating point, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise InputError("positions contain NaN or inf")
        return x

    def _check_z(self, z) -> torch.Tensor:
        z = torch.as_tensor(z)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ShapeError(f"internal coordinates must be (B, {self.dim}), got {tuple(z.shape)}")
        if not z.is_floating_point():
            raise InputError(f"internal coordinates must be floating point, got {z.dtype}")
        return z

    # ------------------------------------------------------------------ transforms
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, n_atoms, 3) nm -> z (B, dim), logdet (B,) = log|det dz/dx| (see module doc)."""
        x = self._check_x(x)
        xt = x.permute(2, 1, 0).contiguous()  # (3, n, B): component-first, batch innermost
        bi, ai, ti = self._b_idx, self._a_idx, self._t_idx
        bonds = g.bond(xt[:, bi[:, 0]], xt[:, bi[:, 1]])  # (n-1, B)
        angles, sins = g.angle_and_sin(xt[:, ai[:, 0]], xt[:, ai[:, 1]], xt[:, ai[:, 2]])
        tors = g.dihedral(xt[:, ti[:, 0]], xt[:, ti[:, 1]], xt[:, ti[:, 2]], xt[:, ti[:, 3]])
        tiny = _tiny(x)
        logdet = -(2.0 * torch.log(bonds.clamp_min(tiny)).sum(0))
        logdet = logdet - torch.log(sins.clamp_min(tiny)).sum(0)
        parts = [bonds, angles, tors]
        if self.rigid == "keep":
            rigid, log_sin_beta = self._rigid_forward(xt)
            parts.append(rigid)
            logdet = logdet - log_sin_beta
        return torch.cat(parts, dim=0).T.contiguous(), logdet

    def _rigid_forward(self, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xt (3, n, B) -> (6, B) [root position, alpha, beta, gamma], log sin beta (B,)."""
        zm = self.zmatrix
        x0 = xt[:, zm[0, 0]]
        d1 = xt[:, zm[1, 0]] - xt[:, zm[1, 1]]  # atom 1 minus root
        e1 = d1 / g.safe_norm(d1)
        ex, ey, ez = e1.unbind(0)
        rho = torch.sqrt(ex * ex + ey * ey + 1e-30)
        beta = g.safe_atan2(rho, ez)
        alpha = g.safe_atan2(ey, ex)
        ca, sa = ex / rho, ey / rho
        u = torch.stack([ez * ca, ez * sa, -rho])
        v = torch.stack([-sa, ca, torch.zeros_like(ca)])
        d2 = xt[:, zm[2, 0]] - xt[:, zm[2, 1]]
        gamma = g.safe_atan2(g.dot(d2, v), g.dot(d2, u))
        out = torch.cat([x0, torch.stack([alpha, beta, gamma])], 0)
        return out, torch.log(rho.clamp_min(_tiny(xt)))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, dim) -> x (B, n_atoms, 3) nm, logdet_inv (B,) = log|det dx/dz| = -logdet."""
        z = self._check_z(z)
        bsz = z.shape[0]
        n = self.n_atoms
        nb, na = n - 1, n - 2
        zt = z.T.contiguous()  # (dim, B): batch innermost
        tiny = _tiny(z)
        logdet = 2.0 * torch.log(zt[:nb].abs().clamp_min(tiny)).sum(0)
        logdet = logdet + torch.log(torch.sin(zt[nb : nb + na]).abs().clamp_min(tiny)).sum(0)
        zm = self.zmatrix
        if self.rigid == "keep":
            t = zt[self.translation_columns]  # (3, B)
            alpha, beta, gamma = zt[self.orientation_columns].unbind(0)
            logdet = logdet + torch.log(torch.sin(beta).abs().clamp_min(tiny))
            sb, cb, sa, ca = torch.sin(beta), torch.cos(beta), torch.sin(alpha), torch.cos(alpha)
            e1 = torch.stack([sb * ca, sb * sa, cb])
            u = torch.stack([cb * ca, cb * sa, -sb])
            v = torch.stack([-sa, ca, torch.zeros_like(ca)])
        else:  # canonical frame: root at 0, atom 1 on +x, atom 2 in the xy plane (y > 0)
            t = z.new_zeros(3, bsz)
            e1 = z.new_tensor([1.0, 0.0, 0.0])[:, None].expand(3, bsz)
            u = z.new_tensor([0.0, 0.0, -1.0])[:, None].expand(3, bsz)
            v = z.new_tensor([0.0, 1.0, 0.0])[:, None].expand(3, bsz)
            gamma = z.new_full((bsz,), math.pi / 2)
        x0 = t
        x1 = t + zt[0] * e1
        first = {int(zm[0, 0]): x0, int(zm[1, 0]): x1}
        xp, xq = first[int(zm[2, 1])], first[int(zm[2, 2])]
        eh = xq - xp
        eh = eh / g.safe_norm(eh)
        th2 = zt[nb]
        x2 = xp + zt[1] * (
            torch.cos(th2) * eh + torch.sin(th2) * (torch.cos(gamma) * u + torch.sin(gamma) * v)
        )
        xt = z.new_zeros(3, n, bsz)
        xt = xt.index_copy(1, zm[:3, 0], torch.stack([x0, x1, x2], 1))
        rows, bc, ac, tc = self._inv_rows, self._inv_bcol, self._inv_acol, self._inv_tcol
        for lo, hi in self._level_slices:
            r = rows[lo:hi]
            xa = g.place(
                xt[:, r[:, 1]],
                xt[:, r[:, 2]],
                xt[:, r[:, 3]],
                zt[bc[lo:hi]],
                zt[ac[lo:hi]],
                zt[tc[lo:hi]],
            )
            xt = xt.index_copy(1, r[:, 0], xa)
        return xt.permute(2, 1, 0).contiguous(), logdet
