"""Smooth (C-infinity) monotone bijections of [0, 1] and of the circle [0, 1).

Construction (Koehler, Kraemer & Noe, "Smooth Normalizing Flows", NeurIPS 2021):

* smooth ramp ``rho(z) = exp(-alpha / z**p)`` for ``z > 0`` and 0 otherwise; we only ever use
  ``t(z) = -log rho(z) = alpha / z**p`` (log space), capped at ``CAP`` where ``rho`` is 0 to
  machine precision by evaluating at ``max(z, zmin)`` (the safe branch of the double-``where``
  trick: no division by ``z <= 0``, so values *and* gradients of any order stay finite);
* bump-based bijection ``g(x) = rho(x') / (rho(x') + rho(1 - x')) = sigmoid(t(1-x') - t(x'))``
  with ``x' = a (x - b) + b`` (learnable slope ``a`` and centre ``b``), renormalised to
  ``(g(x) - g(0)) / (g(1) - g(0))`` so it maps [0, 1] onto [0, 1];
* mixture of ``K`` components with softmax weights plus a small linear part ``c x`` that
  keeps the derivative ``>= c > 0`` (strict monotonicity, finite log-det).

Circular version: with ``a >= 1`` each component is flat (all derivatives zero) near both
ends, so ``f(x) - x`` is smooth and periodic: ``f(1) - 1 = f(0) - 0 = 0``, ``f'(0) = f'(1)`` and
all higher derivatives vanish at the seam. A learnable rotation ``s`` is added:
``y = (f((x - s) mod 1) + s) mod 1``.

Parameters per element (raw, unconstrained), ``n_params = 4 K + 2``:
``[a_1..a_K, b_1..b_K, alpha_1..alpha_K, w_1..w_K, c, s]`` (``s`` is ignored on intervals).
Constraints: ``a = 1 + softplus`` (circle) or ``0.5 + softplus`` (interval; ``a >= 0.5`` keeps
``g(1) - g(0) >= 0.5``), ``b = sigmoid`` (centres spread over (0, 1) at init),
``alpha = exp(2 tanh(raw / 2))`` in ``[e^-2, e^2]``, ``w = softmax``,
``c = min_linear + (1 - min_linear) sigmoid``, ``s = raw mod 1``. The ramp power ``p`` is fixed
(constructor argument, default 1); ``alpha`` is the learnable ramp shape.

The forward map is explicit; the inverse uses :func:`boltzgen.flows.roots.implicit_inverse`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from boltzgen.flows.base import Bijection, softmax_last
from boltzgen.flows.roots import implicit_inverse

CAP = 100.0
"""``t = -log rho`` is capped here: ``exp(-CAP)`` is 0 for every use (value and derivative)."""


def ramp_floor(alpha: Tensor, p: float = 1.0) -> Tensor:
    """Smallest ``z`` with ``t(z) = alpha / z**p <= CAP``: ``(alpha / CAP)**(1/p)``."""
    return alpha / CAP if p == 1.0 else (alpha / CAP).pow(1.0 / p)


def _floor(z: Tensor, zmin: Tensor) -> Tensor:
    """``max(z, zmin)``. With a graph spelt as a where (the same values, and a backward of two
    selects instead of maximum's tie-splitting masks, a fifth of a smooth flow's backward);
    without one (the root finder's iterations) maximum, which is the faster forward."""
    return torch.where(z > zmin, z, zmin) if torch.is_grad_enabled() else torch.maximum(z, zmin)


def log_ramp(
    z: Tensor, alpha: Tensor, p: float = 1.0, zmin: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Minus log of the smooth ramp and its derivative magnitude.

    Args:
        z: points, any shape.
        alpha: ramp scale (> 0), broadcastable to ``z``.
        p: ramp power (> 0).
        zmin: ``ramp_floor(alpha, p)`` if already computed.

    Returns:
        ``(t, q)`` with ``t = alpha / z**p`` (= ``-log rho(z)``) and ``q = -dt/dz = p t / z``,
        evaluated at ``max(z, zmin)``: below ``zmin`` (including ``z <= 0``) ``t = CAP`` and
        ``rho = exp(-CAP)`` is 0 for every use. This clamp is the "safe branch" of the
        double-``where`` trick: the division never sees ``z <= 0``, so values *and* gradients
        (of any order) are finite everywhere. ``q`` is not zeroed below ``zmin``: it only enters
        multiplied by ``rho``-sized factors (``< exp(-CAP + 8)``), i.e. exactly 0 in float64.
    """
    if zmin is None:
        zmin = ramp_floor(alpha, p)
    zc = _floor(z, zmin)
    if p == 1.0:
        t = alpha / zc
        return t, t / zc
    t = alpha * zc.pow(-p)
    return t, p * t / zc


def bump(
    xp: Tensor, alpha: Tensor, p: float = 1.0, zmin: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``g(x') = rho(x') / (rho(x') + rho(1 - x'))`` and ``dg/dx'``, computed in log space."""
    if zmin is None:
        zmin = ramp_floor(alpha, p)
    t1, q1 = log_ramp(xp, alpha, p, zmin)
    t2, q2 = log_ramp(1.0 - xp, alpha, p, zmin)
    g = torch.sigmoid(t2 - t1)
    dg = g * (1.0 - g) * (q1 + q2)
    return g, dg


def bump_value(xp: Tensor, alpha: Tensor, p: float, zmin: Tensor) -> Tensor:
    """``g(x')`` of :func:`bump` alone (the same float operations, without the derivative)."""

    def t(z: Tensor) -> Tensor:
        zc = _floor(z, zmin)
        return alpha / zc if p == 1.0 else alpha * zc.pow(-p)

    return torch.sigmoid(t(1.0 - xp) - t(xp))


class SmoothMixture(Bijection):
    """Mixture of ``K`` smooth bump bijections on [0, 1] (or the circle, ``circular=True``).

    Args:
        n_components: ``K``.
        circular: periodic version on [0, 1) (slopes ``a >= 1`` and a rotation).
        ramp_power: ``p`` in ``rho(z) = exp(-alpha / z**p)`` (fixed).
        min_linear: lower bound of the linear weight ``c`` (so ``f' >= c``).
        tol, max_iter, graph_steps: root-finder settings, see :mod:`boltzgen.flows.roots`.

    ``forward(x, raw)`` is explicit; ``inverse(y, raw)`` root-finds. ``x, y``: ``(...)``,
    ``raw``: ``(..., 4K + 2)``; both return ``(out, log|d out / d in|)`` elementwise.
    """

    def __init__(
        self,
        n_components: int = 8,
        circular: bool | Tensor = False,
        ramp_power: float = 1.0,
        min_linear: float = 0.01,
        tol: float | None = None,
        max_iter: int = 100,
        graph_steps: int = 2,
    ) -> None:
        super().__init__()
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if ramp_power <= 0:
            raise ValueError(f"ramp_power must be > 0, got {ramp_power}")
        self.K = int(n_components)
        # a (m,) mask: one mixture over m columns, circular where True (see :meth:`masked`)
        mask = torch.as_tensor(circular, dtype=torch.bool) if isinstance(circular, Tensor) else None
        self.mixed = mask is not None and mask.ndim == 1
        self.circular = bool(circular) if not self.mixed else bool(mask.all())
        self.p = float(ramp_power)
        self.min_linear = float(min_linear)
        self.tol = tol
        self.max_iter = int(max_iter)
        self.graph_steps = int(graph_steps)
        self.n_params = 4 * self.K + 2
        # spread the component centres at init so that zero raw params give a gentle map
        centres = [(k + 0.5) / self.K for k in range(self.K)]
        self.register_buffer(
            "b_offset", torch.tensor([math.log(c / (1 - c)) for c in centres]), persistent=False
        )
        if self.mixed:
            # a = softplus(raw + shift) + floor: (0, 1) on circular columns, (-1, 0.5) on
            # interval ones, the very same float operations as the two separate mixtures
            self.register_buffer("mask", mask, persistent=False)
            self.register_buffer("a_shift", (mask.float() - 1.0)[:, None], persistent=False)
            self.register_buffer("a_floor", 0.5 + 0.5 * mask.float()[:, None], persistent=False)

    def masked(self, other: Bijection, circular: Tensor) -> Bijection | None:
        """One mixture doing ``self`` (interval) on the columns where ``circular`` is False and
        ``other`` (circular, same settings) where it is True, or None if they differ."""
        same = (
            isinstance(other, SmoothMixture)
            and not self.mixed
            and not other.mixed
            and not self.circular
            and other.circular
            and self.settings() == other.settings()
        )
        return SmoothMixture(circular=circular, **self.settings()) if same else None

    def settings(self) -> dict[str, object]:
        """Constructor arguments except ``circular``."""
        return {
            "n_components": self.K,
            "ramp_power": self.p,
            "min_linear": self.min_linear,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "graph_steps": self.graph_steps,
        }

    def extra_repr(self) -> str:
        circ = "mixed" if self.mixed else self.circular
        return f"K={self.K}, circular={circ}, ramp_power={self.p}"

    def _prepare(self, raw: Tensor) -> tuple[Tensor, ...]:
        K = self.K
        # one split, not six slices: the backward of a slice zero-fills a raw-sized tensor
        ra, rb, ral, rw, rc, rs = raw.split((K, K, K, K, 1, 1), dim=-1)
        if self.mixed:
            a = F.softplus(ra + self.a_shift.to(raw.dtype)) + self.a_floor.to(raw.dtype)
        else:
            a = F.softplus(ra) + 1.0 if self.circular else F.softplus(ra - 1.0) + 0.5
        b = torch.sigmoid(rb + self.b_offset.to(raw.dtype))
        alpha = torch.exp(2.0 * torch.tanh(0.5 * ral))  # in [e^-2, e^2], 1 at raw = 0
        w = softmax_last(rw)
        c = self.min_linear + (1.0 - self.min_linear) * torch.sigmoid(rc.squeeze(-1))
        ab = b * (1.0 - a)  # x' = a x + ab
        zmin = ramp_floor(alpha, self.p)
        g0 = bump_value(ab, alpha, self.p, zmin)
        g1 = bump_value(a + ab, alpha, self.p, zmin)
        wp = (1.0 - c)[..., None] * w / (g1 - g0)
        off = (wp * g0).sum(-1)
        # rotation reduced mod 1 first, so a large raw shift costs no float32 precision
        return a, ab, alpha, zmin, wp, wp * a, off, c, torch.remainder(rs.squeeze(-1), 1.0)

    def _rotate(self, v: Tensor, s: Tensor, back: bool) -> Tensor:
        """``(v + s) mod 1`` (``back``: ``(v - s) mod 1``) on circular columns; interval
        columns unchanged."""
        if not (self.mixed or self.circular):
            return v
        r = torch.remainder(v - s if back else v + s, 1.0)
        return torch.where(self.mask, r, v) if self.mixed else r

    def _core(self, x: Tensor, prm: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """``f(x)`` and ``f'(x)`` for ``x (...)`` given prepared parameters ``(..., K)``."""
        a, ab, alpha, zmin, wp, wpa, off, c, _ = prm
        g, dg = bump(torch.addcmul(ab, a, x[..., None]), alpha, self.p, zmin)
        f = torch.linalg.vecdot(wp, g) - off + c * x
        df = torch.linalg.vecdot(wpa, dg) + c
        return f, df

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        prm = self._prepare(raw)
        s = prm[-1]
        f, df = self._core(self._rotate(x, s, True), prm)
        return self._rotate(f, s, False), torch.log(df)

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        prm = self._prepare(raw)
        s = prm[-1]
        x, df = implicit_inverse(
            lambda u: self._core(u, prm),
            self._rotate(y, s, True),
            params=(raw,),
            tol=self.tol,
            max_iter=self.max_iter,
            graph_steps=self.graph_steps,
        )
        return self._rotate(x, s, False), -torch.log(df)
