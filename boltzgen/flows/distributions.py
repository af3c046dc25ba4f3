"""Base distributions on the torus x box ``[0, 1]^d``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class UniformBase(nn.Module):
    """Uniform distribution on ``[0, 1]^d`` (torus dims included): ``log p = 0``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, d)`` samples (dtype/device follow the module, e.g. after ``.double()``)."""
        return torch.rand(
            n, self.dim, generator=generator, dtype=self._ref.dtype, device=self._ref.device
        )

    def log_prob(self, u: Tensor) -> Tensor:
        """``(n, d) -> (n,)`` zeros (points are assumed inside the box)."""
        return u.new_zeros(u.shape[0])


class TruncatedNormalBase(nn.Module):
    """Uniform on circular dims, normal ``N(0.5, scale^2)`` truncated to [0, 1] on box dims.

    Concentrates base mass away from the box walls, which suits coordinates (bonds, angles)
    whose data never touch the normalisation bounds.
    """

    def __init__(self, circular: Tensor, scale: float = 0.2) -> None:
        super().__init__()
        circ = torch.as_tensor(circular, dtype=torch.bool)
        self.dim = int(circ.numel())
        self.register_buffer("circular", circ)
        self.register_buffer("_ref", torch.zeros(()), persistent=False)
        self.scale = float(scale)
        z = 0.5 / self.scale
        mass = math.erf(z / math.sqrt(2.0))  # P(|N(0,1)| < z)
        self._log_norm = -math.log(self.scale * math.sqrt(2 * math.pi) * mass)
        self._cdf_lo = 0.5 * (1 + math.erf(-z / math.sqrt(2.0)))
        self._cdf_hi = 1.0 - self._cdf_lo

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        c = self.circular
        u = torch.rand(
            n, self.dim, generator=generator, dtype=self._ref.dtype, device=self._ref.device
        )
        p = self._cdf_lo + (self._cdf_hi - self._cdf_lo) * u
        box = 0.5 + self.scale * math.sqrt(2.0) * torch.erfinv(2 * p - 1)
        return torch.where(c, u, box.clamp(0.0, 1.0))

    def log_prob(self, u: Tensor) -> Tensor:
        box = u[:, ~self.circular]
        lp = self._log_norm - 0.5 * ((box - 0.5) / self.scale) ** 2
        return lp.sum(-1)
