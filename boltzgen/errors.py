"""Typed exceptions: every user-facing failure of the library is a ``BoltzgenError``.

The service maps these onto RFC 9457 problem+json responses (4xx), so the message must name
the problem in terms the user can act on.
"""

from __future__ import annotations


class BoltzgenError(Exception):
    """Base class of all boltzgen errors."""


class InputError(BoltzgenError, ValueError):
    """Bad user input: wrong shapes, dtypes, units, NaNs where they are not allowed."""


class ShapeError(InputError):
    """An array has the wrong shape, e.g. positions that are not (B, n_atoms, 3)."""


class StructureError(InputError):
    """A structure file (PDB, ...) could not be read or is physically incomplete."""


class MalformedPDBError(StructureError):
    """The PDB text cannot be parsed, or has no atoms / coordinates."""


class MissingTemplateError(StructureError):
    """A residue has no template in the chosen force field."""


class MissingHydrogensError(StructureError):
    """The structure lacks hydrogens the force field needs."""


class ForceFieldError(InputError):
    """A force-field file cannot be found or read, or the solvent model is unknown."""


class EnergyWorkerError(BoltzgenError, RuntimeError):
    """An energy worker process died or failed; the batch was not evaluated."""


class ReplicaWorkerError(BoltzgenError, RuntimeError):
    """A replica-exchange worker process died or failed; the run stopped."""


class TopologyError(InputError):
    """The bond graph cannot be turned into internal coordinates (e.g. disconnected fragments)."""


class TrainingError(BoltzgenError, RuntimeError):
    """Training diverged (non-finite loss) or cannot continue."""


class FlowMDError(BoltzgenError, RuntimeError):
    """Flow-driven MD left the model's support (infinite potential); ``step`` is the step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class JobParamsError(InputError):
    """A job names an unknown kind or its parameters do not validate."""


class PlatformError(InputError):
    """The requested OpenMM platform does not exist or is not available here."""
