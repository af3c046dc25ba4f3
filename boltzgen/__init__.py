"""boltzgen: Boltzmann generators with smooth normalizing flows in internal coordinates.

Public entry points (see ``shared/API.md`` and the README): ``System``, ``EnergyModel``,
``simulate``, ``InternalCoordinates``, ``BoltzmannGenerator``, ``free_energy_difference``.
"""

from __future__ import annotations

from boltzgen import cv
from boltzgen.analysis import free_energy_difference, free_energy_surface
from boltzgen.coordinates import (
    BoxNormalizer,
    ICNormalizer,
    InternalCoordinates,
    dihedral_indices,
)
from boltzgen.energy import EnergyModel, select_platform
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
from boltzgen.generator import BoltzmannGenerator, TrainConfig, TrainingData, state_weights
from boltzgen.md import MDData, concatenate_md, load_md, simulate
from boltzgen.samples import Samples, clip_log_weights
from boltzgen.systems import System

__version__ = "0.1.0"

__all__ = [
    "BoltzgenError",
    "BoltzmannGenerator",
    "TrainConfig",
    "TrainingData",
    "state_weights",
    "BoxNormalizer",
    "ICNormalizer",
    "InternalCoordinates",
    "dihedral_indices",
    "EnergyWorkerError",
    "FlowMDError",
    "InputError",
    "MalformedPDBError",
    "MissingHydrogensError",
    "MissingTemplateError",
    "ShapeError",
    "StructureError",
    "Flow",
    "RQSpline",
    "SmoothMixture",
    "Transform",
    "build_flow",
    "EnergyModel",
    "MDData",
    "System",
    "concatenate_md",
    "load_md",
    "select_platform",
    "simulate",
    "Samples",
    "clip_log_weights",
    "cv",
    "free_energy_difference",
    "free_energy_surface",
    "__version__",
]
