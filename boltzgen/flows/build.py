"""Builders for coupling flows on the torus x box ``[0, 1]^d``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from boltzgen.errors import InputError
from boltzgen.flows.base import Bijection, Compose, Flow, InvertedBijection
from boltzgen.flows.coupling import CouplingLayer
from boltzgen.flows.distributions import TruncatedNormalBase, UniformBase
from boltzgen.flows.smooth import SmoothMixture
from boltzgen.flows.splines import RQSpline

KINDS = ("smooth", "spline")
MASKS = ("alternate", "grouped")


def _grouped_patterns(circ: torch.Tensor) -> list[torch.Tensor]:
    """Halves of the circular dims, then halves of the interval dims (by rank within each
    kind); empty patterns dropped."""
    patterns = []
    for group in (circ, ~circ):
        rank = torch.cumsum(group.long(), 0) - 1
        for parity in (0, 1):
            m = group & (rank % 2 == parity)
            if bool(m.any()):
                patterns.append(m)
    return patterns


def coupling_masks(
    dim: int,
    n_layers: int,
    circular: Sequence[bool] | torch.Tensor | None = None,
    schedule: str = "alternate",
) -> list[torch.Tensor]:
    """Transformed-dims masks (each ``(dim,)`` bool), one per layer.

    ``schedule="alternate"``: cycle through even/odd and first-half/second-half splits of the
    index, so every pair of dims is coupled within four layers (each dim transformed in two of
    every four layers). ``"grouped"``: cycle through half of the circular dims, the other half,
    half of the interval dims, the other half, each conditioned on all the rest: the periodic
    dims (in internal coordinates the torsions, the multimodal part) get layers of their own
    conditioned on the interval dims, and each interval dim (bonds, angles) is transformed
    conditioned on every torsion. Each dim is transformed once per cycle, so a layer costs
    about half of an alternating one. ``dim == 1``: every layer transforms it.
    """
    if schedule not in MASKS:
        raise InputError(f"mask schedule must be one of {MASKS}, got {schedule!r}")
    if dim == 1:
        return [torch.ones(1, dtype=torch.bool) for _ in range(n_layers)]
    idx = torch.arange(dim)
    if schedule == "alternate":
        patterns = [idx % 2 == 0, idx % 2 == 1, idx < (dim + 1) // 2, idx >= (dim + 1) // 2]
    else:
        circ = (
            torch.zeros(dim, dtype=torch.bool)
            if circular is None
            else torch.as_tensor(circular, dtype=torch.bool).flatten()
        )
        patterns = _grouped_patterns(circ)
    return [patterns[layer % len(patterns)] for layer in range(n_layers)]


def make_bijections(
    kind: str,
    n_components: int = 8,
    n_bins: int = 8,
    cheap: str = "density",
    **kwargs,
) -> tuple[Bijection, Bijection]:
    """``(interval, circular)`` elementwise bijections of a flow ``kind``.

    For ``kind="smooth"`` the explicit smooth map is the forward (data -> base) direction when
    ``cheap="density"`` (log_prob and forces without root finding; sampling root-finds) and the
    inverse (base -> data) direction when ``cheap="sample"``.
    """
    if kind == "smooth":
        pair = (
            SmoothMixture(n_components, circular=False, **kwargs),
            SmoothMixture(n_components, circular=True, **kwargs),
        )
        if cheap == "density":
            return pair
        if cheap == "sample":
            return InvertedBijection(pair[0]), InvertedBijection(pair[1])
        raise InputError(f"cheap must be 'density' or 'sample', got {cheap!r}")
    if kind == "spline":
        return RQSpline(n_bins, circular=False, **kwargs), RQSpline(n_bins, circular=True, **kwargs)
    raise InputError(f"unknown flow kind {kind!r}; expected one of {KINDS}")


def build_flow(
    dim: int,
    circular: Sequence[bool] | torch.Tensor | None = None,
    kind: str = "smooth",
    n_layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    n_components: int = 8,
    n_bins: int = 8,
    cheap: str = "density",
    base: str = "uniform",
    activation: str = "silu",
    masks: str = "alternate",
) -> Flow:
    """Coupling flow on ``[0, 1]^dim`` with periodic dims flagged by ``circular``.

    Args:
        dim: number of coordinates ``d``.
        circular: ``(d,)`` bool mask of periodic dims (default: none).
        kind: ``"smooth"`` (mixtures of smooth bump bijections, C-infinity, inverse by root
            finding) or ``"spline"`` (rational-quadratic splines, C1 on circles).
        n_layers: number of coupling layers.
        hidden: conditioner MLP hidden widths.
        n_components: mixture components per smooth transform.
        n_bins: bins per spline.
        cheap: smooth flows only: ``"density"`` (default; ``log_prob``/forces explicit,
            ``sample`` root-finds) or ``"sample"`` (the reverse).
        base: ``"uniform"`` or ``"truncnormal"`` (uniform on circular dims, truncated normal on
            box dims).
        activation: conditioner activation (``"silu"`` keeps the flow smooth).
        masks: coupling schedule, ``"alternate"`` or ``"grouped"`` (see :func:`coupling_masks`).

    Returns:
        :class:`~boltzgen.flows.base.Flow`.
    """
    if int(dim) < 1:
        raise InputError(f"dim must be >= 1, got {dim}")
    dim = int(dim)
    circ = (
        torch.zeros(dim, dtype=torch.bool)
        if circular is None
        else torch.as_tensor(circular, dtype=torch.bool).flatten()
    )
    if circ.numel() != dim:
        raise InputError(f"circular mask has {circ.numel()} entries, expected dim={dim}")
    if int(n_layers) < 1:
        raise InputError(f"n_layers must be >= 1, got {n_layers}")
    layers = []
    for mask in coupling_masks(dim, int(n_layers), circ, masks):
        interval_b, circular_b = make_bijections(kind, n_components, n_bins, cheap)
        layers.append(CouplingLayer(mask, circ, interval_b, circular_b, hidden, activation))
    if base == "uniform":
        base_dist = UniformBase(dim)
    elif base == "truncnormal":
        base_dist = TruncatedNormalBase(circ)
    else:
        raise InputError(f"base must be 'uniform' or 'truncnormal', got {base!r}")
    return Flow(base_dist, Compose(layers), circ)
