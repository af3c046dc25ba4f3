"""boltzgen: Boltzmann generators with smooth normalizing flows in internal coordinates.

Public entry points (see ``shared/API.md`` and the README): ``System``, ``EnergyModel``,
``simulate``, ``InternalCoordinates``, ``BoltzmannGenerator``, ``free_energy_difference``.

``import boltzgen`` is light: every name below is loaded on first use (PEP 562), so the CLI,
the SDK and the server start without importing torch, OpenMM or mdtraj until they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "System": "boltzgen.systems",
    "EnergyModel": "boltzgen.energy",
    "select_platform": "boltzgen.openmm_context",
    "fastest_platform": "boltzgen.openmm_context",
    "make_context": "boltzgen.openmm_context",
    "GAS_CONSTANT": "boltzgen.constants",
    "TrajectoryWriter": "boltzgen.md",
    "MDData": "boltzgen.md",
    "concatenate_md": "boltzgen.md",
    "load_md": "boltzgen.md",
    "simulate": "boltzgen.md",
    "LangevinConfig": "boltzgen.simulation",
    "BoxNormalizer": "boltzgen.coordinates",
    "ICNormalizer": "boltzgen.coordinates",
    "InternalCoordinates": "boltzgen.coordinates",
    "dihedral_indices": "boltzgen.coordinates",
    "Flow": "boltzgen.flows",
    "RQSpline": "boltzgen.flows",
    "SmoothMixture": "boltzgen.flows",
    "Transform": "boltzgen.flows",
    "build_flow": "boltzgen.flows",
    "BoltzmannGenerator": "boltzgen.generator.model",
    "FlowMixture": "boltzgen.generator.mixture",
    "FlowConfig": "boltzgen.generator.config",
    "TrainConfig": "boltzgen.generator.config",
    "BalanceConfig": "boltzgen.generator.config",
    "TrainingData": "boltzgen.generator.data",
    "state_weights": "boltzgen.generator.data",
    "Samples": "boltzgen.samples",
    "clip_log_weights": "boltzgen.samples",
    "RefinedSamples": "boltzgen.refinement",
    "refine": "boltzgen.refinement",
    "free_energy_difference": "boltzgen.analysis",
    "free_energy_surface": "boltzgen.analysis",
    "BoltzgenError": "boltzgen.errors",
    "EnergyWorkerError": "boltzgen.errors",
    "FlowMDError": "boltzgen.errors",
    "InputError": "boltzgen.errors",
    "MalformedPDBError": "boltzgen.errors",
    "MissingHydrogensError": "boltzgen.errors",
    "MissingTemplateError": "boltzgen.errors",
    "ShapeError": "boltzgen.errors",
    "StructureError": "boltzgen.errors",
}
# public submodules reachable as attributes (bg.cv.dihedral, ...)
_SUBMODULES = (
    "cv",
    "analysis",
    "diagnostics",
    "plots",
    "jobs",
    "client",
    "schemas",
    "coordinates",
    "flows",
    "openmm_context",
)

__all__ = [
    "BalanceConfig",
    "BoltzgenError",
    "BoltzmannGenerator",
    "BoxNormalizer",
    "EnergyModel",
    "EnergyWorkerError",
    "Flow",
    "FlowConfig",
    "FlowMDError",
    "FlowMixture",
    "GAS_CONSTANT",
    "ICNormalizer",
    "InputError",
    "InternalCoordinates",
    "LangevinConfig",
    "MDData",
    "MalformedPDBError",
    "MissingHydrogensError",
    "MissingTemplateError",
    "RQSpline",
    "RefinedSamples",
    "Samples",
    "ShapeError",
    "SmoothMixture",
    "StructureError",
    "System",
    "TrainConfig",
    "TrainingData",
    "TrajectoryWriter",
    "Transform",
    "__version__",
    "build_flow",
    "clip_log_weights",
    "concatenate_md",
    "cv",
    "dihedral_indices",
    "fastest_platform",
    "free_energy_difference",
    "free_energy_surface",
    "load_md",
    "make_context",
    "refine",
    "select_platform",
    "simulate",
    "state_weights",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"boltzgen.{name}")
    else:
        raise AttributeError(f"module 'boltzgen' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from boltzgen import cv
    from boltzgen.analysis import free_energy_difference, free_energy_surface
    from boltzgen.constants import GAS_CONSTANT
    from boltzgen.coordinates import (
        BoxNormalizer,
        ICNormalizer,
        InternalCoordinates,
        dihedral_indices,
    )
    from boltzgen.energy import EnergyModel
    from boltzgen.errors import (
        BoltzgenError,
        EnergyWorkerError,
        FlowMDError,
        InputError,
        MalformedPDBError,
        MissingHydrogensError,
        MissingTemplateError,
        ShapeError,
        StructureError,
    )
    from boltzgen.flows import Flow, RQSpline, SmoothMixture, Transform, build_flow
    from boltzgen.generator.config import BalanceConfig, FlowConfig, TrainConfig
    from boltzgen.generator.data import TrainingData, state_weights
    from boltzgen.generator.mixture import FlowMixture
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.md import MDData, TrajectoryWriter, concatenate_md, load_md, simulate
    from boltzgen.openmm_context import fastest_platform, make_context, select_platform
    from boltzgen.samples import Samples, clip_log_weights
    from boltzgen.simulation import LangevinConfig
    from boltzgen.systems import System
