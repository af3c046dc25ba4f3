"""A small analytic target for training tests: a flow on the unit cube [0, 1]^3 posing as one
"atom", with a tilted double well along the first coordinate and narrow Gaussians along the
others (no OpenMM), its exact samples and a generator stand-in."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from boltzgen.flows import build_flow

BARRIER, TILT, SIGMA = 6.0, 3.0, 0.1  # kT; minor state (y0 > 0.5) about 18 %


def toy_energy(y: torch.Tensor) -> torch.Tensor:
    """Reduced energy (kT) of points (B, 3) in the unit cube: wells at y0 = 0.25 and 0.75."""
    z = 16.0 * (y[:, 0] - 0.5) ** 2 - 1.0
    rest = ((y[:, 1:] - 0.5) ** 2).sum(1) / (2 * SIGMA**2)
    return BARRIER * z**2 + TILT * y[:, 0] + rest


def exact_samples(n: int, seed: int) -> np.ndarray:
    """Independent draws from exp(-u) on the cube, (n, 1, 3): inverse CDF along y0 on a fine
    grid, rejection of the (rare) normal draws outside [0, 1] along the others."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, 20001)
    y = torch.as_tensor(np.stack([grid, np.full_like(grid, 0.5), np.full_like(grid, 0.5)], 1))
    p = np.exp(-toy_energy(y).numpy())
    cdf = np.cumsum(p) / p.sum()
    y0 = np.interp(rng.random(n), cdf, grid)
    rest = rng.normal(0.5, SIGMA, size=(4 * n, 2))
    rest = rest[((rest > 0) & (rest < 1)).all(1)][:n]
    return np.concatenate([y0[:, None], rest], 1)[:, None, :]


def minor_state(x: np.ndarray) -> np.ndarray:
    return (np.asarray(x)[:, 0, 0] > 0.5).astype(int)


class ToyGenerator(nn.Module):
    """What :func:`fit` needs of a generator: densities, differentiable draws, an energy."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.flow = build_flow(3, kind="spline", n_layers=4, hidden=(32,), n_bins=12).double()
        self.system = SimpleNamespace(kT=1.0, n_atoms=1)
        self.dtype = torch.float64

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return toy_energy(x.reshape(len(x), 3))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.as_tensor(x, dtype=self.dtype).reshape(len(x), 3)
        inside = ((y >= 0) & (y <= 1)).all(1)
        lq = self.flow.log_prob(y.clamp(0.0, 1.0))
        return torch.where(inside, lq, torch.full_like(lq, -math.inf))

    def sample_positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y, lq = self.flow.sample(n)
        return y.reshape(n, 1, 3), lq


@torch.no_grad()
def flow_ess(gen: ToyGenerator, n: int = 20_000) -> float:
    x, lq = gen.sample_positions(n)
    lw = -gen.energy(x) - lq
    w = torch.softmax(lw, 0)
    return float(1.0 / (w**2).sum() / n)


class Crash(Exception):
    """Raised by a callback to interrupt a training run."""


def interrupted_and_resumed(data, opts: dict, crash_epoch: int, tmp_path) -> tuple:
    """Train a :class:`ToyGenerator` uninterrupted, and again crashed after ``crash_epoch`` and
    resumed from its checkpoint (from other initial weights and RNG state, which must not
    matter). Returns (full history, full generator, resumed history, resumed generator)."""
    from boltzgen.generator.training import fit

    full_gen = ToyGenerator(seed=0)
    full = fit(full_gen, data, checkpoint=tmp_path / "full.pt", **opts)

    def crash(event):
        if event.get("epoch") == crash_epoch:
            raise Crash

    ckpt = tmp_path / "cut.pt"
    try:
        fit(ToyGenerator(seed=0), data, checkpoint=ckpt, callbacks=[crash], **opts)
    except Crash:
        pass
    else:
        raise AssertionError(f"the run did not reach epoch {crash_epoch}")
    torch.manual_seed(123)
    gen = ToyGenerator(seed=9)
    return full, full_gen, fit(gen, data, checkpoint=ckpt, **opts), gen
