"""Rational-quadratic spline bijections of [0, 1] and of the circle (baseline).

Neural spline flows (Durkan et al. 2019) with the circular variant of Rezende et al. (2020):
on the circle the derivatives at 0 and 1 are one shared parameter, so the map is C1 across the
seam, and a learnable rotation ``s`` is applied, ``y = (g((x - s) mod 1) + s) mod 1``.

Parameters per element (raw), ``n_params = 3 K + 1`` on both domains:
interval ``[widths (K), heights (K), knot derivatives (K + 1)]``;
circle ``[widths (K), heights (K), knot derivatives (K, the last knot reuses the first), s]``.

Implementation notes (speed): one hand-written softmax for widths and heights together, bin search with
``torch.searchsorted`` on the knots, and one fused ``gather`` of the six per-bin quantities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from boltzgen.flows.base import Bijection, softmax_last


class RQSpline(Bijection):
    """Monotone rational-quadratic spline on [0, 1] (``circular=False``) or [0, 1).

    Args:
        n_bins: ``K``.
        circular: tie boundary derivatives and add a rotation.
        min_bin: minimal bin width/height (fraction of [0, 1]).
        min_derivative: minimal knot derivative.

    ``forward(x, raw)`` / ``inverse(y, raw)``: ``x, y`` of shape ``(...)``, ``raw`` of shape
    ``(..., 3K + 1)``; return ``(out, log|d out / d in|)`` elementwise. Both are analytic.
    """

    def __init__(
        self,
        n_bins: int = 8,
        circular: bool | Tensor = False,
        min_bin: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        super().__init__()
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        if min_bin * n_bins >= 1.0:
            raise ValueError(f"min_bin * n_bins must be < 1, got {min_bin} * {n_bins}")
        self.K = int(n_bins)
        # a (m,) mask: one spline over m columns, circular where True (see :meth:`masked`)
        mask = torch.as_tensor(circular, dtype=torch.bool) if isinstance(circular, Tensor) else None
        self.mixed = mask is not None and mask.ndim == 1
        self.circular = bool(circular) if not self.mixed else bool(mask.all())
        if self.mixed:
            self.register_buffer("mask", mask, persistent=False)
        self.min_bin = float(min_bin)
        self.min_derivative = float(min_derivative)
        # softplus(raw + shift) + min_derivative == 1 at raw == 0 (identity at init)
        self._d_shift = math.log(math.expm1(1.0 - self.min_derivative))
        self.n_params = 3 * self.K + 1

    def extra_repr(self) -> str:
        return f"K={self.K}, circular={'mixed' if self.mixed else self.circular}"

    def masked(self, other, circular: Tensor) -> RQSpline | None:
        """One spline doing ``self`` (interval) where ``circular`` is False and ``other``
        (circular, same settings) where it is True, or None if they differ."""
        same = (
            isinstance(other, RQSpline)
            and not (self.mixed or other.mixed or self.circular)
            and other.circular
            and (self.K, self.min_bin, self.min_derivative)
            == (other.K, other.min_bin, other.min_derivative)
        )
        return RQSpline(self.K, circular, self.min_bin, self.min_derivative) if same else None

    def _knots(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-bin table ``(..., K, 6)``: x_k, w_k, y_k, h_k, d_k, d_{k+1}; x-knots; y-knots."""
        K = self.K
        scale = 1.0 - self.min_bin * K
        # one split, not slices (a slice's backward zero-fills a raw-sized tensor); one
        # softmax for widths and heights together: (..., 2, K)
        nd = K if self.circular else K + 1
        rwh, rd = raw.split((2 * K, nd, raw.shape[-1] - 2 * K - nd), dim=-1)[:2]
        wh = self.min_bin + scale * softmax_last(rwh.unflatten(-1, (2, K)))
        w, h = wh[..., 0, :], wh[..., 1, :]
        d = self.min_derivative + F.softplus(rd + self._d_shift)
        if self.mixed:  # circular columns: the last knot reuses the first (raw K+1 is s)
            d = torch.cat([d[..., :K], torch.where(self.mask, d[..., 0], d[..., K])[..., None]], -1)
        elif self.circular:
            d = torch.cat([d, d[..., :1]], dim=-1)
        zero = torch.zeros_like(w[..., :1])
        xk = torch.cat([zero, torch.cumsum(w, dim=-1)], dim=-1)
        yk = torch.cat([zero, torch.cumsum(h, dim=-1)], dim=-1)
        table = torch.stack([xk[..., :-1], w, yk[..., :-1], h, d[..., :-1], d[..., 1:]], dim=-1)
        return table, xk, yk

    def _bin(self, v: Tensor, knots: Tensor, table: Tensor) -> Tensor:
        idx = torch.searchsorted(knots[..., 1:-1].contiguous(), v[..., None].contiguous())
        idx = idx.clamp(0, self.K - 1)
        return torch.gather(table, -2, idx[..., None].expand(*idx.shape, 6)).squeeze(-2)

    def _spline(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        table, xk, _ = self._knots(raw)
        x0, w, y0, h, d0, d1 = self._bin(x, xk, table).unbind(-1)
        s = h / w
        xi = ((x - x0) / w).clamp(0.0, 1.0)
        xi1 = xi * (1.0 - xi)
        den = s + (d0 + d1 - 2.0 * s) * xi1
        y = y0 + h * (s * xi * xi + d0 * xi1) / den
        dnum = s * s * (d1 * xi * xi + 2.0 * s * xi1 + d0 * (1.0 - xi) ** 2)
        return y, torch.log(dnum) - 2.0 * torch.log(den)

    def _spline_inv(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        table, _, yk = self._knots(raw)
        x0, w, y0, h, d0, d1 = self._bin(y, yk, table).unbind(-1)
        s = h / w
        dy = y - y0
        k = d0 + d1 - 2.0 * s
        qa = h * (s - d0) + dy * k
        qb = h * d0 - dy * k
        qc = -s * dy
        disc = (qb * qb - 4.0 * qa * qc).clamp(min=0.0)
        xi = ((2.0 * qc) / (-qb - torch.sqrt(disc))).clamp(0.0, 1.0)
        x = x0 + xi * w
        xi1 = xi * (1.0 - xi)
        den = s + k * xi1
        dnum = s * s * (d1 * xi * xi + 2.0 * s * xi1 + d0 * (1.0 - xi) ** 2)
        return x, 2.0 * torch.log(den) - torch.log(dnum)

    def _rotated(self, fn, v: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """Interval map on [0, 1]; on the circle conjugated by the rotation ``s``."""
        if not (self.circular or self.mixed):
            return fn(v, raw)
        s = torch.remainder(raw[..., -1], 1.0)
        if self.mixed:
            out, ld = fn(torch.where(self.mask, torch.remainder(v - s, 1.0), v), raw)
            return torch.where(self.mask, torch.remainder(out + s, 1.0), out), ld
        out, ld = fn(torch.remainder(v - s, 1.0), raw)
        return torch.remainder(out + s, 1.0), ld

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        return self._rotated(self._spline, x, raw)

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        return self._rotated(self._spline_inv, y, raw)
