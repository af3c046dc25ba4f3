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
MASKS = ("alternate", "grouped", "hierarchical")


def _halves(group: torch.Tensor) -> list[torch.Tensor]:
    """Even/odd and first/second-half splits of the dims in ``group`` (by rank within it)."""
    rank = torch.cumsum(group.long(), 0) - 1
    n = int(group.sum())
    cands = [rank % 2 == 0, rank % 2 == 1, rank < (n + 1) // 2, rank >= (n + 1) // 2]
    return [group & c for c in cands]


def _grouped_patterns(circ: torch.Tensor) -> list[torch.Tensor]:
    """Halves of the circular dims, then halves of the interval dims (by rank within each
    kind); empty patterns dropped."""
    return [m for group in (circ, ~circ) for m in _halves(group)[:2] if bool(m.any())]


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
    if schedule not in MASKS[:2]:
        raise InputError(
            f"mask schedule must be one of {MASKS[:2]} (hierarchical: hierarchical_plan), "
            f"got {schedule!r}"
        )
    if dim == 1:
        return [torch.ones(1, dtype=torch.bool) for _ in range(n_layers)]
    if schedule == "alternate":
        patterns = _halves(torch.ones(dim, dtype=torch.bool))
    else:
        circ = (
            torch.zeros(dim, dtype=torch.bool)
            if circular is None
            else torch.as_tensor(circular, dtype=torch.bool).flatten()
        )
        patterns = _grouped_patterns(circ)
    return [patterns[layer % len(patterns)] for layer in range(n_layers)]


def hierarchical_plan(
    groups: Sequence[int] | torch.Tensor, n_layers: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(transformed, context)`` masks (each ``(d,)`` bool) of a hierarchical coupling flow,
    in the data -> base order of the layers.

    ``groups`` (d,) ints give the order in which the dims are generated (base -> data): the
    density factorises as ``q(x_0) q(x_1 | x_0) q(x_2 | x_0, x_1) ...`` over the groups
    ``0 < 1 < 2 ...`` (in internal coordinates torsions, then angles given the torsions, then
    bonds given both, as bgflow's peptide flows). Group 0 is a coupling flow of its own (its
    even/odd and half/half splits, each conditioned on the rest of group 0); each later group
    is transformed elementwise in two layers (one when ``n_layers`` is short), conditioned on
    all earlier groups; group 0 gets the remaining layers. A one-dim group 0 is transformed by
    learned constants.
    """
    g = torch.as_tensor(groups, dtype=torch.long).flatten()
    levels = torch.unique(g).tolist()
    n_late = len(levels) - 1
    per = 2 if n_layers >= 2 * len(levels) else 1
    n_first = n_layers - per * n_late
    if n_first < 1:
        raise InputError(
            f"a hierarchical flow over {len(levels)} groups needs at least {len(levels)} layers, "
            f"got {n_layers}"
        )
    first = g == levels[0]
    plan = []
    for level in reversed(levels[1:]):  # data -> base: the last-generated group first
        plan += [(g == level, g < level)] * per
    halves = [h for h in _halves(first) if bool(h.any())]  # one dim: itself, twice
    for k in range(n_first):
        tr = halves[k % len(halves)]
        plan.append((tr, first & ~tr))
    return plan


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
    groups: Sequence[int] | torch.Tensor | None = None,
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
        masks: coupling schedule, ``"alternate"`` or ``"grouped"`` (see :func:`coupling_masks`)
            or ``"hierarchical"`` (see :func:`hierarchical_plan`; needs ``groups``).
        groups: ``(d,)`` ints, the generation order of the dims for ``masks="hierarchical"``.

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
    if masks == "hierarchical":
        if groups is None or torch.as_tensor(groups).numel() != dim:
            raise InputError(f"masks='hierarchical' needs groups, one int per dim ({dim})")
        plan = hierarchical_plan(groups, int(n_layers))
    else:
        plan = [(m, None) for m in coupling_masks(dim, int(n_layers), circ, masks)]
    layers = []
    for mask, context in plan:
        interval_b, circular_b = make_bijections(kind, n_components, n_bins, cheap)
        layers.append(
            CouplingLayer(mask, circ, interval_b, circular_b, hidden, activation, context)
        )
    if base == "uniform":
        base_dist = UniformBase(dim)
    elif base == "truncnormal":
        base_dist = TruncatedNormalBase(circ)
    else:
        raise InputError(f"base must be 'uniform' or 'truncnormal', got {base!r}")
    return Flow(base_dist, Compose(layers), circ)
