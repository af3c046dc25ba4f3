"""Enhanced sampling on any :class:`boltzgen.System`: umbrella sampling + MBAR along a dihedral
(:mod:`boltzgen.umbrella`) and temperature replica exchange (:mod:`boltzgen.remd`).

This module re-exports their public names (the import path ``boltzgen.enhanced`` keeps
working); both run on the one MD driver, :class:`boltzgen.simulation.Simulation`.
"""

from __future__ import annotations

from boltzgen.openmm_context import fastest_platform
from boltzgen.remd import (
    REMDResult,
    exchange_log_acceptance,
    exchange_sweep,
    geometric_temperatures,
    replica_exchange,
)
from boltzgen.umbrella import (
    UmbrellaResult,
    umbrella_sampling,
)

__all__ = [
    "REMDResult",
    "UmbrellaResult",
    "exchange_log_acceptance",
    "exchange_sweep",
    "fastest_platform",
    "geometric_temperatures",
    "replica_exchange",
    "umbrella_sampling",
]
