"""Plain NumPy reference implementation (one Python iteration per atom), for tests and benchmarks.

Deliberately independent formulas from the torch code, so that tests can check the fast path
(:mod:`boltzgen.coordinates.transform`, :func:`boltzgen.coordinates.geometry.dihedral`) against
them: arccos for angles, the classic two-normal dihedral (arctan2), Gram-Schmidt frames for
placement. Not used by the package itself; do not replace these copies with calls to the code
they test. Canonical frame as in ``InternalCoordinates`` (rigid="remove").
"""

from __future__ import annotations

import numpy as np


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def reference_forward(x: np.ndarray, zmatrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (B, n, 3) nm -> z (B, 3n-6) [bonds, angles, torsions], logdet (B,) ("remove" mode)."""
    x = np.asarray(x, dtype=np.float64)
    n = zmatrix.shape[0]
    bonds, angles, tors = [], [], []
    logdet = np.zeros(x.shape[0])
    for k in range(1, n):
        a, p, q, r = zmatrix[k]
        d = x[:, a] - x[:, p]
        b = np.linalg.norm(d, axis=-1)
        bonds.append(b)
        logdet -= 2 * np.log(b)
        if k >= 2:
            e = x[:, q] - x[:, p]
            c = np.sum(d * e, -1) / (b * np.linalg.norm(e, axis=-1))
            th = np.arccos(np.clip(c, -1.0, 1.0))
            angles.append(th)
            logdet -= np.log(np.sin(th))
        if k >= 3:
            n1 = np.cross(x[:, a] - x[:, p], x[:, q] - x[:, p])
            n2 = np.cross(x[:, p] - x[:, q], x[:, r] - x[:, q])
            axis = _unit(x[:, q] - x[:, p])
            cosv = np.sum(n1 * n2, -1)
            sinv = np.sum(np.cross(n1, n2) * axis, -1)
            tors.append(np.arctan2(sinv, cosv))
    z = np.concatenate([np.stack(bonds, 1), np.stack(angles, 1), np.stack(tors, 1)], 1)
    return z, logdet


def reference_inverse(z: np.ndarray, zmatrix: np.ndarray) -> np.ndarray:
    """z (B, 3n-6) -> x (B, n, 3) nm in the canonical frame (root at 0, atom 1 on +x, atom 2 in
    the xy plane with y > 0)."""
    z = np.asarray(z, dtype=np.float64)
    n = zmatrix.shape[0]
    nb, na = n - 1, n - 2
    x = np.zeros((z.shape[0], n, 3))
    for k in range(1, n):
        a, p, q, r = zmatrix[k]
        b = z[:, k - 1]
        if k == 1:
            x[:, a, 0] = b
            continue
        th = z[:, nb + k - 2]
        if k == 2:
            e = _unit(x[:, q] - x[:, p])
            perp = np.array([0.0, 1.0, 0.0])
            x[:, a] = x[:, p] + b[:, None] * (np.cos(th)[:, None] * e + np.sin(th)[:, None] * perp)
            continue
        phi = z[:, nb + na + k - 3]
        e = _unit(x[:, q] - x[:, p])
        w = x[:, r] - x[:, q]
        w = _unit(w - np.sum(w * e, -1, keepdims=True) * e)
        m = np.cross(e, w)
        local = np.cos(th)[:, None] * e + np.sin(th)[:, None] * (
            np.cos(phi)[:, None] * w - np.sin(phi)[:, None] * m
        )
        x[:, a] = x[:, p] + b[:, None] * local
    return x
