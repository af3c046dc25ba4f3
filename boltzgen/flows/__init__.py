"""Normalizing flows on the torus x box ``[0, 1]^d`` (pure torch, no physics).

Smooth flows (mixtures of smooth bump bijections, Koehler et al. 2021) with a vectorised
root-finding inverse whose gradients follow the implicit-function theorem, and rational-quadratic
spline flows (interval and circular) as the baseline. See :func:`build_flow`.
"""

from boltzgen.flows.base import (
    Bijection,
    Compose,
    ElementwiseTransform,
    Flow,
    InverseTransform,
    InvertedBijection,
    Permutation,
    Transform,
)
from boltzgen.flows.build import build_flow, coupling_masks, make_bijections
from boltzgen.flows.conditioners import MLPConditioner, PeriodicEmbedding
from boltzgen.flows.coupling import CouplingLayer
from boltzgen.flows.distributions import TruncatedNormalBase, UniformBase
from boltzgen.flows.roots import default_tolerance, implicit_inverse, solve_monotone
from boltzgen.flows.smooth import SmoothMixture
from boltzgen.flows.splines import RQSpline

__all__ = [
    "Bijection",
    "Compose",
    "CouplingLayer",
    "ElementwiseTransform",
    "Flow",
    "InverseTransform",
    "InvertedBijection",
    "MLPConditioner",
    "PeriodicEmbedding",
    "Permutation",
    "RQSpline",
    "SmoothMixture",
    "Transform",
    "TruncatedNormalBase",
    "UniformBase",
    "build_flow",
    "coupling_masks",
    "default_tolerance",
    "implicit_inverse",
    "make_bijections",
    "solve_monotone",
]
