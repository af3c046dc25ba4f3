"""Deprecated alias of :mod:`boltzgen.generator.flow_md` (renamed for what it holds); removed
in the next release."""

import warnings

from boltzgen.generator.flow_md import FlowTrajectory, flow_md

warnings.warn(
    "boltzgen.generator.potential is deprecated; import flow_md from boltzgen.generator.flow_md",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["FlowTrajectory", "flow_md"]
