"""Batched, NaN-safe torch geometry: distances, angles, dihedrals and their inverse (NeRF).

Points are **component-first** tensors of shape (3, ...) (nm): the xyz axis is axis 0 so that
every elementwise operation runs over contiguous slabs (about 2x faster than (..., 3) on CPU).
The "safe" variants never produce NaN values or NaN gradients for degenerate (collinear,
coincident) geometry: norms carry a tiny additive epsilon under the square root and ``atan2``
is guarded where both arguments vanish. The epsilon (1e-24 nm^2) changes lengths by < 1e-22
relative.
"""

from __future__ import annotations

import torch

_EPS2 = 1e-24  # nm^2, added under square roots


def dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Dot product over axis 0."""
    return (u * v).sum(0)


def cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Cross product over axis 0."""
    return torch.linalg.cross(u, v, dim=0)


def safe_norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over axis 0, sqrt(|v|^2 + 1e-24): finite gradient at v = 0."""
    return torch.sqrt((v * v).sum(0) + _EPS2)


def safe_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``atan2(y, x)`` that returns 0 with zero gradient where x = y = 0 (instead of NaN grads)."""
    degenerate = (x * x + y * y) < 1e-60
    xs = torch.where(degenerate, torch.ones_like(x), x)
    ys = torch.where(degenerate, torch.zeros_like(y), y)
    return torch.atan2(ys, xs)


def bond(xa: torch.Tensor, xp: torch.Tensor) -> torch.Tensor:
    """|xa - xp| (nm)."""
    return safe_norm(xa - xp)


def angle_and_sin(
    xa: torch.Tensor, xp: torch.Tensor, xq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle a-p-q in [0, pi] (rad) via atan2(|u x v|, u.v), and its sine (same formula)."""
    u = xa - xp
    v = xq - xp
    c = safe_norm(cross(u, v))
    theta = safe_atan2(c, dot(u, v))
    return theta, c / (safe_norm(u) * safe_norm(v))


def dihedral(
    xa: torch.Tensor, xp: torch.Tensor, xq: torch.Tensor, xr: torch.Tensor
) -> torch.Tensor:
    """Dihedral angle a-p-q-r in [-pi, pi] (rad), IUPAC sign convention (same as mdtraj).

    Symmetric under reversal: dihedral(a, p, q, r) == dihedral(r, q, p, a). This is the
    package's one dihedral formula: internal coordinates and the CVs of :mod:`boltzgen.cv`
    (NumPy input included) use it; ``boltzgen.coordinates.reference`` keeps an independent
    NumPy formula on purpose, to test this one.
    """
    b0 = xa - xp
    b1 = xq - xp
    b2 = xr - xq
    b1n = b1 / safe_norm(b1)
    v = b0 - dot(b0, b1n) * b1n
    w = b2 - dot(b2, b1n) * b1n
    return safe_atan2(dot(cross(b1n, v), w), dot(v, w))


def place(
    xp: torch.Tensor,
    xq: torch.Tensor,
    xr: torch.Tensor,
    b: torch.Tensor,
    theta: torch.Tensor,
    phi: torch.Tensor,
) -> torch.Tensor:
    """Inverse of (bond, angle, dihedral): the point a with |a-p| = b, angle(a,p,q) = theta and
    dihedral(a,p,q,r) = phi. Points (3, ...), internal coordinates (...)."""
    b1 = xq - xp
    b1n = b1 / safe_norm(b1)
    b2 = xr - xq
    w = b2 - dot(b2, b1n) * b1n
    wn = w / safe_norm(w)
    m = cross(b1n, wn)
    st = torch.sin(theta)
    return xp + b * (torch.cos(theta) * b1n + st * (torch.cos(phi) * wn - torch.sin(phi) * m))
