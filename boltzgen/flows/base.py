"""Core abstractions: elementwise bijections, transforms on [0, 1]^d, composition, flows.

Conventions (all flows in ``boltzgen.flows``):

* data and base space are the unit box ``[0, 1]^d``; dims flagged in the boolean ``circular``
  mask ``(d,)`` are periodic ``[0, 1)``;
* ``Transform.forward(x) -> (y, logdet)`` and ``Transform.inverse(y) -> (x, logdet)`` with
  ``x, y`` of shape ``(B, d)`` and ``logdet = log|det dy/dx|`` (resp. ``dx/dy``) of shape ``(B,)``;
* one direction convention for the whole library, as in nflows and zuko: **forward goes from
  the data (physical) side toward the base (latent) side**. ``Flow.forward`` is data -> base
  (the density direction), ``Flow.inverse`` base -> data (the sampling direction); likewise
  ``InternalCoordinates.forward`` is Cartesian -> internal and ``ICNormalizer.forward`` is
  Cartesian -> unit box, so positions x -> z -> u -> base noise is "forward" all the way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from boltzgen.errors import InputError, ShapeError


def softmax_last(x: Tensor) -> Tensor:
    """Softmax over the last dim. ``torch.softmax`` over a short last dim (K ~ 8) runs a
    slow kernel on CPU (about 5x the cost of these four ops), so it is spelled out."""
    e = torch.exp(x - x.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


class Bijection(nn.Module):
    """Elementwise monotone bijection of [0, 1] (or the circle) with *external* parameters.

    Subclasses define ``n_params`` (raw parameters per element), ``circular`` and
    ``forward(x, raw)`` / ``inverse(y, raw)`` mapping ``(...)`` and ``(..., n_params)`` to
    ``(out (...), log|d out / d in| (...))``.
    """

    n_params: int
    circular: bool

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def masked(self, other: Bijection, circular: Tensor) -> Bijection | None:
        """A bijection of ``(..., m)`` columns doing ``self`` (the interval one) where the
        ``(m,)`` mask ``circular`` is False and ``other`` (the circular one) where it is True,
        in one evaluation with the same results; None when the pair cannot be fused."""
        return None


class InvertedBijection(Bijection):
    """Swap the two directions of a bijection (e.g. make root finding the forward)."""

    def __init__(self, inner: Bijection) -> None:
        super().__init__()
        self.inner = inner
        self.n_params = inner.n_params
        self.circular = inner.circular

    def forward(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(x, raw)

    def inverse(self, y: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.forward(y, raw)

    def masked(self, other: Bijection, circular: Tensor) -> Bijection | None:
        if not isinstance(other, InvertedBijection):
            return None
        fused = self.inner.masked(other.inner, circular)
        return None if fused is None else InvertedBijection(fused)


class Transform(nn.Module):
    """Bijection of ``[0, 1]^d``; ``forward``/``inverse`` return ``(out (B, d), logdet (B,))``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError


class InverseTransform(Transform):
    """The inverse of a transform (directions swapped)."""

    def __init__(self, inner: Transform) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.forward(y)


class Compose(Transform):
    """``T_n o ... o T_1``: ``forward`` applies ``transforms`` in order, ``inverse`` reversed."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for t in self.transforms:
            x, ld = t(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        logdet = y.new_zeros(y.shape[0])
        for t in reversed(self.transforms):
            y, ld = t.inverse(y)
            logdet = logdet + ld
        return y, logdet


class Permutation(Transform):
    """Permute coordinates: ``y[:, i] = x[:, perm[i]]`` (log-det 0).

    Note the ``circular`` mask is permuted too: downstream layers see ``circular[perm]``.
    """

    def __init__(self, perm: Sequence[int] | Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(perm.numel())):
            raise InputError(f"not a permutation of 0..{perm.numel() - 1}: {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, self.inv_perm], y.new_zeros(y.shape[0])


class ElementwiseTransform(Transform):
    """Unconditional elementwise transform: dim ``i`` uses its own learnable raw parameters.

    Args:
        circular: ``(d,)`` bool mask; circular dims use ``circular_bijection``.
        interval_bijection, circular_bijection: :class:`Bijection` instances with the same
            ``n_params`` (either may be ``None`` if no dim needs it).
        init_scale: std of the random initial raw parameters (0 = default map).
    """

    def __init__(
        self,
        circular: Sequence[bool] | Tensor,
        interval_bijection: Bijection | None,
        circular_bijection: Bijection | None,
        init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        circ = torch.as_tensor(circular, dtype=torch.bool)
        self.register_buffer("circular", circ)
        self.dispatch = BijectionDispatch(circ, interval_bijection, circular_bijection)
        self.raw = nn.Parameter(init_scale * torch.randn(circ.numel(), self.dispatch.n_params))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ld = self.dispatch(x, self.raw.expand(x.shape[0], -1, -1), inverse=False)
        return y, ld.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, ld = self.dispatch(y, self.raw.expand(y.shape[0], -1, -1), inverse=True)
        return x, ld.sum(-1)


class BijectionDispatch(nn.Module):
    """Apply interval / circular bijections to the matching columns of ``(B, m)`` inputs.

    With ``fuse`` (default) a pair that supports it (:meth:`Bijection.masked`) runs as one
    masked evaluation over all columns, which spares the column gathers, the concatenation and
    their backward (zero-filled raw-sized gradients); the results are the same.
    """

    def __init__(
        self,
        circular: Tensor,
        interval_bijection: Bijection | None,
        circular_bijection: Bijection | None,
        fuse: bool = True,
    ) -> None:
        super().__init__()
        circ = torch.as_tensor(circular, dtype=torch.bool)
        self.all_circ = bool(circ.all())
        self.no_circ = not bool(circ.any())
        if (not self.no_circ and circular_bijection is None) or (
            not self.all_circ and interval_bijection is None
        ):
            raise InputError("a bijection is missing for circular or interval dims")
        if circular_bijection is not None and not circular_bijection.circular:
            raise InputError("circular_bijection must have circular=True")
        if interval_bijection is not None and interval_bijection.circular:
            raise InputError("interval_bijection must have circular=False")
        ns = {b.n_params for b in (interval_bijection, circular_bijection) if b is not None}
        if len(ns) != 1:
            raise InputError(f"bijections must have the same n_params, got {sorted(ns)}")
        self.n_params = ns.pop()
        self.interval = interval_bijection if not self.all_circ else None
        self.circ = circular_bijection if not self.no_circ else None
        mixed = not (self.all_circ or self.no_circ)
        self.fused = interval_bijection.masked(circular_bijection, circ) if mixed and fuse else None
        idx_c = torch.nonzero(circ).flatten()
        idx_i = torch.nonzero(~circ).flatten()
        self.register_buffer("idx_c", idx_c, persistent=False)
        self.register_buffer("idx_i", idx_i, persistent=False)
        self.register_buffer("unsort", torch.argsort(torch.cat([idx_i, idx_c])), persistent=False)

    def forward(self, x: Tensor, raw: Tensor, inverse: bool = False) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, m)``, ``raw`` ``(B, m, n_params)`` -> ``(out (B, m), logabsdet (B, m))``."""
        if self.no_circ:
            b = self.interval
            return b.inverse(x, raw) if inverse else b(x, raw)
        if self.all_circ:
            b = self.circ
            return b.inverse(x, raw) if inverse else b(x, raw)
        if self.fused is not None:
            b = self.fused
            return b.inverse(x, raw) if inverse else b(x, raw)
        outs, lds = [], []
        for b, idx in ((self.interval, self.idx_i), (self.circ, self.idx_c)):
            o, ld = (b.inverse if inverse else b)(x[:, idx], raw[:, idx])
            outs.append(o)
            lds.append(ld)
        return torch.cat(outs, 1)[:, self.unsort], torch.cat(lds, 1)[:, self.unsort]


def check_points(y: Tensor, dim: int, circular: Tensor, name: str = "y") -> Tensor:
    """Validate ``(B, dim)`` points of ``[0, 1]^d``: wrap circular dims, reject bad interval dims.

    Raises:
        ShapeError: wrong shape. InputError: non-finite values or interval dims outside [0, 1]
        (by more than 1e-6; tiny excursions are clamped).
    """
    if not isinstance(y, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 2 or y.shape[1] != dim:
        raise ShapeError(f"{name} must have shape (B, {dim}), got {tuple(y.shape)}")
    if not y.is_floating_point():
        raise InputError(f"{name} must be floating point, got {y.dtype}")
    with torch.no_grad():
        if not bool(torch.isfinite(y).all()):
            raise InputError(f"{name} contains NaN or inf")
        box = y[:, ~circular]
        if box.numel() and bool(((box < -1e-6) | (box > 1 + 1e-6)).any()):
            bad = torch.nonzero(((box < -1e-6) | (box > 1 + 1e-6)).any(0)).flatten()
            dims = torch.nonzero(~circular).flatten()[bad].tolist()
            raise InputError(f"{name}: interval dims {dims} leave [0, 1]")
    if not bool(circular.any()):
        return y.clamp(0.0, 1.0)
    return torch.where(circular, torch.remainder(y, 1.0), y.clamp(0.0, 1.0))


class Flow(nn.Module):
    """Normalizing flow on ``[0, 1]^d``: a base distribution and a transform data -> base.

    Args:
        base: base distribution with ``sample(n) -> (n, d)`` and ``log_prob(u) -> (n,)``.
        transform: :class:`Transform`, forward = data -> base (the library's convention).
        circular: ``(d,)`` bool mask of periodic dims of the *data* space.
    """

    def __init__(self, base: nn.Module, transform: Transform, circular: Sequence[bool] | Tensor):
        super().__init__()
        self.base = base
        self.transform = transform
        circ = torch.as_tensor(circular, dtype=torch.bool)
        self.register_buffer("circular", circ)
        self.dim = int(circ.numel())

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Data -> base: ``y (B, d) -> (u (B, d), log|det du/dy| (B,))``."""
        return self.transform(y)

    def inverse(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Base -> data: ``u (B, d) -> (y (B, d), log|det dy/du| (B,))``."""
        return self.transform.inverse(u)

    def log_prob(self, y: Tensor) -> Tensor:
        """``log q(y)`` (B,) of data points ``y (B, d)`` in ``[0, 1]^d`` (circular dims wrapped)."""
        y = check_points(y, self.dim, self.circular)
        u, logdet = self.transform(y)
        return self.base.log_prob(u) + logdet

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples: ``(y (n, d), log q(y) (n,))``; differentiable (reverse KL)."""
        if int(n) < 1:
            raise InputError(f"number of samples must be >= 1, got {n}")
        u = self.base.sample(int(n))
        y, logdet = self.transform.inverse(u)
        return y, self.base.log_prob(u) - logdet

    def force(self, y: Tensor, create_graph: bool = True) -> tuple[Tensor, Tensor]:
        """``(log q(y) (B,), grad_y log q(y) (B, d))``; with ``create_graph`` the gradient is
        differentiable w.r.t. the parameters (force matching)."""
        y = check_points(y, self.dim, self.circular).detach().requires_grad_(True)
        with torch.enable_grad():
            lp = self.log_prob(y)
            (g,) = torch.autograd.grad(lp.sum(), y, create_graph=create_graph)
        return lp, g
