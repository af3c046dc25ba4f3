"""Normalizing flows on the torus x box ``[0, 1]^d`` (pure torch, no physics).

Smooth flows (mixtures of smooth bump bijections, Koehler et al. 2021) with a vectorised
root-finding inverse whose gradients follow the implicit-function theorem, and rational-quadratic
spline flows (interval and circular) as the baseline. See :func:`build_flow`.

Which direction is cheap: spline flows are analytic both ways. A smooth flow is explicit in one
direction and root-finds in the other (safeguarded Newton, about 5-6 iterations; measured
inverse/forward about 1.8x). ``build_flow(..., cheap="density")`` (default) makes data -> base
explicit, so ``log_prob``, forces ``grad_y log q`` and force matching (double backward) need no
root finding, while ``sample`` root-finds (with exact implicit gradients for reverse KL);
``cheap="sample"`` swaps the two. Through the root finder, first and second derivatives are
exact (checked with gradcheck/gradgradcheck), not only finite.
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
