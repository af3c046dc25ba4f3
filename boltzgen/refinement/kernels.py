"""The moves of the refinement and what they evaluate.

:class:`Evaluator` computes u, du/dx, log q and dlog q/dx in chunks and counts the
configurations; :func:`hmc_sweep` is one Hamiltonian Monte Carlo sweep (MALA with one leapfrog
step) that leaves pi_b ∝ q^(1-b) exp(-b u) invariant, optionally restricted to a stratum;
:func:`initial_step` is the first step size. The gradient only steers the proposal (see the
package docstring): a non-finite gradient is replaced by zero without breaking invariance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError, ShapeError

__all__ = [
    "JITTER",
    "KERNELS",
    "Evaluator",
    "State",
    "hmc_sweep",
    "initial_step",
    "stratum_labels",
]

KERNELS = {"hmc": 0.7, "mala": 0.6}  # kernel -> default target acceptance
JITTER = 0.2  # HMC step size jitter (fraction)


class Evaluator:
    """u, du/dx, log q, dlog q/dx on a batch (in chunks), counting configurations."""

    def __init__(self, energy: Callable, log_q: Callable, batch_size: int | None) -> None:
        self.energy = energy
        self.log_q = log_q
        self.batch_size = None if batch_size is None else int(batch_size)
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.n_energy_evals = 0
        self.n_log_q_evals = 0
        self._warned: set[str] = set()

    def _call(self, fn: Callable, x: torch.Tensor, grad: bool, what: str):
        n = len(x)
        vals = torch.empty(n, dtype=x.dtype)
        grads = torch.zeros_like(x) if grad else None
        bs = self.batch_size or max(n, 1)
        for a in range(0, n, bs):
            xc = x[a : a + bs].detach().clone()
            m = len(xc)
            g = None
            if grad:
                xc.requires_grad_(True)
                with torch.enable_grad():
                    v = self._check(fn(xc), m, what)
                    if v.requires_grad:
                        (g,) = torch.autograd.grad(v.sum(), xc, allow_unused=True)
                    elif what == "energy" and what not in self._warned:
                        self._warned.add(what)
                        warnings.warn(
                            "the energy is not differentiable w.r.t. the positions: the moves "
                            "fall back to random-walk proposals (still exact, but slow)",
                            RuntimeWarning,
                            stacklevel=4,
                        )
            else:
                with torch.no_grad():
                    v = self._check(fn(xc), m, what)
            vals[a : a + m] = v.detach().to(x.dtype)
            if g is not None:
                grads[a : a + m] = g.detach().to(x.dtype)
            if what == "energy":
                self.n_energy_evals += m
            else:
                self.n_log_q_evals += m
        if grads is not None:  # a non-finite gradient steers nothing (see the package docstring)
            bad = ~torch.isfinite(grads.reshape(n, -1)).all(dim=1)
            grads[bad] = 0.0
        return vals, grads

    @staticmethod
    def _check(v: Any, m: int, what: str) -> torch.Tensor:
        if not isinstance(v, torch.Tensor):
            v = torch.as_tensor(np.asarray(v, dtype=np.float64))
        if v.shape != (m,):
            raise ShapeError(
                f"{what} must return shape ({m},) for {m} configurations, got {tuple(v.shape)}"
            )
        return v

    def __call__(self, x: torch.Tensor, need_lq: bool):
        u, gu = self._call(self.energy, x, True, "energy")
        if need_lq:
            lq, glq = self._call(self.log_q, x, True, "log_q")
        else:
            lq, glq = torch.full_like(u, math.nan), torch.zeros_like(x)
        return u, gu, lq, glq

    def log_q_values(self, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.log_q, x, False, "log_q")[0]


def _log_pi(b: float, u: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """log pi_b (-inf where pi_b = 0 or undefined)."""
    if b >= 1.0:
        valid = torch.isfinite(u)
        lp = -u
    else:
        valid = torch.isfinite(u) & torch.isfinite(lq)
        lp = (1.0 - b) * lq - b * u
    return torch.where(valid, lp, torch.full_like(lp, -math.inf))


def _grad(b: float, gu: torch.Tensor, glq: torch.Tensor) -> torch.Tensor:
    return -gu if b >= 1.0 else (1.0 - b) * glq - b * gu


def _bshape(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def _sq(p: torch.Tensor) -> torch.Tensor:
    return (p * p).reshape(len(p), -1).sum(dim=1)


class State:
    """Particles with their energies, log q and gradients (float64 torch)."""

    def __init__(self, x, u, gu, lq, glq) -> None:
        self.x, self.u, self.gu, self.lq, self.glq = x, u, gu, lq, glq

    def take(self, idx: torch.Tensor) -> None:
        for k in ("x", "u", "gu", "lq", "glq"):
            setattr(self, k, getattr(self, k)[idx])


def hmc_sweep(
    st: State,
    alive: torch.Tensor,
    b: float,
    eps: float,
    n_leapfrog: int,
    jitter: float,
    ev: Evaluator,
    gen: torch.Generator,
    region: tuple[Callable, Any] | None = None,
) -> float:
    """One HMC (n_leapfrog >= 1; MALA for 1) sweep over the live particles, in place.

    ``region = (labels, label)``: proposals with ``labels(x) != label`` are rejected (the
    target is pi_b restricted to the stratum). Returns the mean acceptance probability."""
    ia = torch.nonzero(alive).reshape(-1)
    m = len(ia)
    if m == 0:
        return float("nan")
    x0 = st.x[ia]
    lp0 = _log_pi(b, st.u[ia], st.lq[ia])
    g = _grad(b, st.gu[ia], st.glq[ia])
    e = torch.full((m,), eps, dtype=x0.dtype)
    if jitter > 0:
        e = e * (1.0 + jitter * (2.0 * torch.rand(m, generator=gen, dtype=x0.dtype) - 1.0))
    e = _bshape(e, x0)
    p = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    h0 = -lp0 + 0.5 * _sq(p)
    x = x0.clone()
    u, gu, lq, glq = st.u[ia].clone(), st.gu[ia].clone(), st.lq[ia].clone(), st.glq[ia].clone()
    ok = torch.ones(m, dtype=torch.bool)
    need_lq = b < 1.0
    for _ in range(n_leapfrog):
        p = p + 0.5 * e * g
        x = x + e * p
        j = torch.nonzero(ok).reshape(-1)
        g = torch.zeros_like(x)
        if len(j) == 0:
            break
        u[j], gu[j], lq[j], glq[j] = ev(x[j], need_lq)
        ok[j] = torch.isfinite(_log_pi(b, u[j], lq[j]))
        g[j] = _grad(b, gu[j], glq[j])
        g[~ok] = 0.0
        p = p + 0.5 * e * g
    if region is not None and bool(ok.any()):
        j = torch.nonzero(ok).reshape(-1)
        ok[j] = torch.as_tensor(stratum_labels(region[0], x[j]) == region[1])
    lp1 = _log_pi(b, u, lq)
    log_acc = h0 - (-lp1 + 0.5 * _sq(p))
    log_acc = torch.where(ok & ~torch.isnan(log_acc), log_acc, torch.full_like(log_acc, -math.inf))
    accept = torch.log(torch.rand(m, generator=gen, dtype=x0.dtype)) < log_acc
    acc_prob = torch.exp(torch.clamp(log_acc, max=0.0))
    k = ia[accept]
    st.x[k], st.u[k], st.gu[k], st.lq[k], st.glq[k] = (
        x[accept],
        u[accept],
        gu[accept],
        lq[accept],
        glq[accept],
    )
    return float(acc_prob.mean())


def stratum_labels(fn: Callable, x: Any) -> np.ndarray:
    """Stratum labels (N,) of positions x (torch or numpy) as a numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    lab = np.asarray(fn(x))
    if lab.shape != (len(x),):
        raise ShapeError(f"strata(x) must return shape ({len(x)},), got {lab.shape}")
    return lab


def initial_step(st: State, alive: torch.Tensor, b: float) -> float:
    """sigma_hat * d^(-1/4) with sigma_hat = sqrt(d / median |grad log pi_b|^2)."""
    g = _grad(b, st.gu[alive], st.glq[alive])
    d = g[0].numel() if len(g) else 1
    g2 = float(torch.median(_sq(g))) if len(g) else 0.0
    if not (g2 > 0.0 and math.isfinite(g2)):
        return 0.1
    return math.sqrt(d / g2) * d**-0.25
