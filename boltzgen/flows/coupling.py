"""Coupling layers over mixed torus x box domains."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from boltzgen.errors import InputError
from boltzgen.flows.base import Bijection, BijectionDispatch, Transform
from boltzgen.flows.conditioners import MLPConditioner


class CouplingLayer(Transform):
    """``y_A = x_A``, ``y_B = tau(x_B; c(x_C))`` with elementwise bijections ``tau``; the
    conditioner reads the context dims ``C``, by default all of ``A``.

    Args:
        transformed: ``(d,)`` bool mask of the dims ``B`` that are transformed.
        context: ``(d,)`` bool mask of the dims ``C`` the conditioner reads (a subset of the
            untransformed dims; default: all of them). A hierarchical flow conditions e.g. the
            torsions on the torsions only, so their marginal is a flow of its own.
        circular: ``(d,)`` bool mask of periodic dims; circular dims in ``B`` use
            ``circular_bijection``, the others ``interval_bijection``; circular dims in ``A``
            enter the conditioner as ``(cos 2 pi x, sin 2 pi x)``.
        interval_bijection, circular_bijection: :class:`~boltzgen.flows.base.Bijection`.
        hidden, activation: conditioner MLP (see :class:`MLPConditioner`).

    ``forward``/``inverse``: ``(B, d) -> ((B, d), logdet (B,))``.
    """

    def __init__(
        self,
        transformed: Sequence[bool] | Tensor,
        circular: Sequence[bool] | Tensor,
        interval_bijection: Bijection | None,
        circular_bijection: Bijection | None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        context: Sequence[bool] | Tensor | None = None,
    ) -> None:
        super().__init__()
        tr = torch.as_tensor(transformed, dtype=torch.bool)
        circ = torch.as_tensor(circular, dtype=torch.bool)
        if tr.shape != circ.shape or tr.ndim != 1:
            raise InputError(
                f"transformed {tuple(tr.shape)} and circular {tuple(circ.shape)} masks differ"
            )
        if not bool(tr.any()):
            raise InputError("coupling layer transforms no dimension")
        ctx = ~tr if context is None else torch.as_tensor(context, dtype=torch.bool)
        if ctx.shape != tr.shape:
            raise InputError(f"context mask {tuple(ctx.shape)} differs from {tuple(tr.shape)}")
        if bool((ctx & tr).any()):
            raise InputError("a coupling layer's context may not include a transformed dim")
        idx_b = torch.nonzero(tr).flatten()
        idx_a = torch.nonzero(~tr).flatten()
        idx_c = torch.nonzero(ctx).flatten()
        self.register_buffer("idx_a", idx_a, persistent=False)
        self.register_buffer("idx_b", idx_b, persistent=False)
        self.register_buffer("idx_c", idx_c, persistent=False)
        self.register_buffer("unsort", torch.argsort(torch.cat([idx_a, idx_b])), persistent=False)
        self.dispatch = BijectionDispatch(circ[idx_b], interval_bijection, circular_bijection)
        self.conditioner = MLPConditioner(
            circ[idx_c], idx_b.numel(), self.dispatch.n_params, hidden, activation
        )

    def _couple(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        xa, xb = x[:, self.idx_a], x[:, self.idx_b]
        raw = self.conditioner(x[:, self.idx_c])
        yb, ld = self.dispatch(xb, raw, inverse=inverse)
        return torch.cat([xa, yb], 1)[:, self.unsort], ld.sum(-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(x, inverse=False)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._couple(y, inverse=True)
