"""Vectorised inversion of monotone scalar maps on [0, 1] with implicit-function gradients.

The solver is a safeguarded Newton method (``rtsafe``): every element keeps a bracket
``[lo, hi]`` that contains its root; a Newton step that leaves the bracket, is not finite, or
is not at most half the previous step is replaced by bisection. The Python loop runs over iterations on whole tensors, never over
elements, and stops as soon as every element has converged (or after ``max_iter`` steps).

Gradients: the root ``x*`` is found without a graph and then re-attached by two Newton steps
taken *with* a graph, ``x <- x - (f(x; theta) - y) / f'(x; theta)``. At the solution the values
do not change, but the steps carry the implicit-function derivatives: one step from a point
that is correct to order 0 gives derivatives exact to first order (``dx/dy = 1/f'``,
``dx/dtheta = -(df/dtheta)/f'``), the second step makes them exact to third order, so double
backward (forces and their parameter gradients) is exact, not just defined (one step fails
``gradgradcheck``, two pass: see ``tests/test_flows.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

ScalarMap = Callable[[Tensor], tuple[Tensor, Tensor]]
"""``fn(x) -> (f(x), f'(x))``, elementwise, same shape as ``x``."""


def default_tolerance(dtype: torch.dtype) -> float:
    """Absolute tolerance on ``x`` used by the solver: 1e-6 (float32/16), 1e-12 (float64)."""
    return 1e-12 if dtype == torch.float64 else 1e-6


def solve_monotone(
    fn: ScalarMap,
    y: Tensor,
    x0: Tensor | None = None,
    tol: float | None = None,
    max_iter: int = 100,
) -> tuple[Tensor, int]:
    """Solve ``fn(x) = y`` for an increasing ``fn`` with ``fn(0) = 0``, ``fn(1) = 1``.

    Args:
        fn: increasing map of [0, 1] onto [0, 1] returning ``(f, f')``.
        y: targets in [0, 1], any shape.
        x0: starting point (default ``y``).
        tol: absolute tolerance on ``x`` (default :func:`default_tolerance`).
        max_iter: hard bound on iterations.

    Returns:
        ``(x, n_iter)`` with ``x`` detached, same shape as ``y``.
    """
    tol = default_tolerance(y.dtype) if tol is None else tol
    with torch.no_grad():
        y = y.detach()
        lo = torch.zeros_like(y)
        hi = torch.ones_like(y)
        x = (y if x0 is None else x0.detach()).clamp(0.0, 1.0).clone()
        dx = torch.ones_like(y)  # previous step size (rtsafe's dxold)
        done = torch.zeros_like(y, dtype=torch.bool)
        n = 0
        for n in range(1, max_iter + 1):  # noqa: B007
            f, df = fn(x)
            r = f - y
            lo = torch.where(r < 0, x, lo)
            hi = torch.where(r > 0, x, hi)
            step = r / df
            x_new = x - step
            small = step.abs() <= tol  # converged: accept even if rounding puts it on the bracket
            # bisect if Newton leaves the bracket (or is NaN) or does not halve the step size
            # (rtsafe's rule; it stops Newton oscillating inside the bracket)
            bad = ~(small | ((x_new > lo) & (x_new < hi) & (2.0 * step.abs() <= dx)))
            x_new = torch.where(bad, 0.5 * (lo + hi), x_new)
            x_new = torch.where(done, x, x_new)  # converged elements stay put
            dx = (x_new - x).abs()
            x = x_new
            done = done | small | (hi - lo <= tol)
            if bool(done.all()):
                break
    return x, n


def implicit_inverse(
    fn: ScalarMap,
    y: Tensor,
    params: Sequence[Tensor] = (),
    tol: float | None = None,
    max_iter: int = 100,
    graph_steps: int = 2,
) -> tuple[Tensor, Tensor]:
    """Differentiable inverse ``x = f^{-1}(y; theta)`` and ``f'(x)``.

    Args:
        fn: closure ``x -> (f(x; theta), f'(x; theta))`` built from tensors that may require
            grad (the conditioner outputs ``theta``).
        y: targets in [0, 1].
        params: the tensors ``fn`` depends on; only used to decide whether a graph is needed.
        graph_steps: Newton steps re-attached with a graph (2 gives derivatives exact to third
            order; 1 is enough for first-order training).

    Returns:
        ``(x, dfdx)`` where ``dfdx = f'(x)`` is evaluated at the re-attached ``x`` so that
        ``-log(dfdx)`` is the differentiable log-det of the inverse.
    """
    x, _ = solve_monotone(fn, y, tol=tol, max_iter=max_iter)
    needs_graph = torch.is_grad_enabled() and (
        y.requires_grad or any(p.requires_grad for p in params)
    )
    if needs_graph:
        for _ in range(graph_steps):
            f, df = fn(x)
            x = x - (f - y) / df
    _, df = fn(x)
    return x, df
