"""Conditioner networks: features of the conditioning coordinates -> raw transform parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


class PeriodicEmbedding(nn.Module):
    """Map ``(B, m)`` points of ``[0, 1]^m`` to features: interval dims ``2x - 1``, circular dims
    ``(cos 2 pi x, sin 2 pi x)`` (so the conditioner is smooth and periodic across the seam).
    Output width ``m + n_circular``."""

    def __init__(self, circular: Tensor) -> None:
        super().__init__()
        circ = torch.as_tensor(circular, dtype=torch.bool)
        self.register_buffer("idx_c", torch.nonzero(circ).flatten(), persistent=False)
        self.register_buffer("idx_i", torch.nonzero(~circ).flatten(), persistent=False)
        self.out_features = int(circ.numel() + circ.sum())

    def forward(self, x: Tensor) -> Tensor:
        parts = []
        if self.idx_i.numel():
            parts.append(2.0 * x[:, self.idx_i] - 1.0)
        if self.idx_c.numel():
            ang = (2.0 * math.pi) * x[:, self.idx_c]
            parts += [torch.cos(ang), torch.sin(ang)]
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]


class MLPConditioner(nn.Module):
    """MLP from conditioning coordinates to ``(B, n_out, n_params)`` raw parameters.

    Args:
        circular_in: ``(m,)`` bool mask of the conditioning inputs (may be empty: the output is
            then a learned constant).
        n_out: number of transformed coordinates.
        n_params: raw parameters per transformed coordinate.
        hidden: hidden widths.
        activation: ``"silu"`` (default, smooth: needed for force matching), ``"tanh"``,
            ``"relu"``, ``"gelu"``.

    The last layer is zero-initialised, so the flow starts at the bijections' default map.
    """

    def __init__(
        self,
        circular_in: Tensor,
        n_out: int,
        n_params: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.n_out, self.n_params = int(n_out), int(n_params)
        circ = torch.as_tensor(circular_in, dtype=torch.bool)
        self.embed = PeriodicEmbedding(circ) if circ.numel() else None
        width = self.embed.out_features if self.embed is not None else 0
        layers: list[nn.Module] = []
        for h in hidden if width else ():
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        last = nn.Linear(width, self.n_out * self.n_params) if width else None
        if last is not None:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            layers.append(last)
            self.net: nn.Module | None = nn.Sequential(*layers)
            self.const = None
        else:
            self.net = None
            self.const = nn.Parameter(torch.zeros(self.n_out * self.n_params))

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, m) -> raw (B, n_out, n_params)``."""
        out = self.const.expand(x.shape[0], -1) if self.net is None else self.net(self.embed(x))
        return out.view(x.shape[0], self.n_out, self.n_params)
