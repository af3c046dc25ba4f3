"""The one place that creates OpenMM Contexts: platform choice, seeds, integrators.

:func:`make_context` builds the ``openmm.Context`` used by MD (:func:`boltzgen.md.simulate`),
enhanced sampling (:mod:`boltzgen.enhanced`) and the energy evaluators
(:mod:`boltzgen.energy_worker`). ``platform="auto"`` for a :class:`~boltzgen.systems.System` is
:func:`fastest_platform` (Reference for small vacuum molecules, else CUDA > CPU > Reference);
for a bare ``openmm.System`` or its XML, which carry no solvent label, it is
:func:`select_platform` (CUDA > CPU > Reference).

Kept free of torch (and imports :mod:`boltzgen.systems` only for type hints) so that spawned
energy-worker processes stay light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import openmm
import openmm.unit as unit

from boltzgen.errors import InputError, PlatformError

if TYPE_CHECKING:
    from boltzgen.systems import System

__all__ = [
    "PLATFORM_PREFERENCE",
    "available_platforms",
    "check_langevin_settings",
    "fastest_platform",
    "langevin_integrator",
    "make_context",
    "openmm_seed",
    "select_platform",
]

#: Order in which ``platform="auto"`` picks a platform.
PLATFORM_PREFERENCE: tuple[str, ...] = ("CUDA", "CPU", "Reference")

#: Below this many atoms a vacuum system runs fastest on the Reference platform.
_SMALL_VACUUM_ATOMS = 200


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms this installation can use."""
    return [
        openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
    ]


def select_platform(name: str | None = "auto", available: Sequence[str] | None = None) -> str:
    """Choose an OpenMM platform name.

    ``"auto"`` takes the first of :data:`PLATFORM_PREFERENCE` (CUDA > CPU > Reference) that is in
    ``available`` (default: the installed platforms). An explicit name (case-insensitive) is
    honoured if available, else :class:`PlatformError` names the choices.
    """
    avail = list(available_platforms() if available is None else available)
    if name is None or name.lower() == "auto":
        for candidate in PLATFORM_PREFERENCE:
            if candidate in avail:
                return candidate
        raise PlatformError(
            f"none of the preferred OpenMM platforms {list(PLATFORM_PREFERENCE)} is available "
            f"(available: {avail})"
        )
    for candidate in avail:
        if candidate.lower() == name.lower():
            return candidate
    raise PlatformError(
        f"OpenMM platform {name!r} is not available; choose one of {avail} or 'auto'"
    )


def fastest_platform(system: System, platform: str | None = "auto") -> str:
    """Resolve ``platform``. ``"auto"`` picks the platform measured fastest here for the
    system's kind: Reference for small vacuum systems (< 200 atoms; ~100k steps/s for ADP vs
    5-11k on the CPU platform, whose per-step overhead dominates), else
    :func:`select_platform` (CUDA > CPU > Reference; CPU ~5k steps/s for ADP with OBC against
    0.9k on Reference). An explicit name is checked and returned as OpenMM spells it."""
    auto = platform is None or platform.lower() == "auto"
    if auto and system.solvent == "vacuum" and system.n_atoms < _SMALL_VACUUM_ATOMS:
        return "Reference"
    return select_platform(platform)


def openmm_seed(seed: int) -> int:
    """A fixed non-zero OpenMM random seed for any int (OpenMM treats 0 as "pick one at
    random"); use it for integrators and ``Context.setVelocitiesToTemperature``."""
    return int(seed) % 2_147_483_646 + 1


def check_langevin_settings(timestep: float, friction: float) -> None:
    """Raise :class:`InputError` unless timestep (ps) > 0 and friction (1/ps) >= 0."""
    if not timestep > 0 or not friction >= 0:
        raise InputError("timestep (ps) must be > 0 and friction (1/ps) >= 0")


def langevin_integrator(
    temperature: float, friction: float, timestep: float, seed: int
) -> openmm.LangevinMiddleIntegrator:
    """LangevinMiddleIntegrator at ``temperature`` K, ``friction`` 1/ps, ``timestep`` ps, whose
    random stream is seeded with :func:`openmm_seed` (seed)."""
    check_langevin_settings(timestep, friction)
    integrator = openmm.LangevinMiddleIntegrator(
        float(temperature) * unit.kelvin,
        float(friction) / unit.picosecond,
        float(timestep) * unit.picosecond,
    )
    integrator.setRandomNumberSeed(openmm_seed(seed))
    return integrator


def make_context(
    system: System | openmm.System | str,
    integrator: openmm.Integrator | None = None,
    platform: str | None = "auto",
    properties: Mapping[str, str] | None = None,
    threads: int | None = None,
) -> openmm.Context:
    """An ``openmm.Context`` for ``system``.

    Args:
        system: a :class:`boltzgen.systems.System` (the Context gets its own copy of its OpenMM
            system), an ``openmm.System`` (used as it is, e.g. with an added bias force) or the
            XML of one (what energy workers receive).
        integrator: the integrator; None = a ``VerletIntegrator(1 fs)`` for energy and force
            evaluation (never stepped).
        platform: an OpenMM platform name (case-insensitive) or ``"auto"``: for a System
            :func:`fastest_platform`, for a bare OpenMM system or XML :func:`select_platform`.
            The chosen name is ``context.getPlatform().getName()``.
        properties: OpenMM platform properties, passed as given.
        threads: CPU-platform threads (``Threads`` property) unless ``properties`` sets it;
            ignored on other platforms.
    """
    if isinstance(system, str):
        omm_system = openmm.XmlSerializer.deserialize(system)
        name = select_platform(platform)
    elif isinstance(system, openmm.System):
        omm_system = system
        name = select_platform(platform)
    elif hasattr(system, "serialize_openmm"):  # boltzgen.systems.System (not imported: light)
        omm_system = openmm.XmlSerializer.deserialize(system.serialize_openmm())
        name = fastest_platform(system, platform)
    else:
        raise InputError(
            "make_context needs a boltzgen System, an openmm.System or its XML, "
            f"got {type(system).__name__}"
        )
    props = {str(k): str(v) for k, v in (properties or {}).items()}
    if threads and name == "CPU":
        props.setdefault("Threads", str(int(threads)))
    if integrator is None:
        integrator = openmm.VerletIntegrator(0.001)
    return openmm.Context(omm_system, integrator, openmm.Platform.getPlatformByName(name), props)
