"""The one Langevin MD driver behind plain MD, umbrella sampling, replica exchange and
metadynamics.

* :class:`LangevinConfig`: the integrator settings every MD entry point takes as
  ``langevin=`` (timestep, friction, temperature override, platform, seed, threads), validated
  once.
* :class:`Simulation` (in the manner of ``openmm.app.Simulation``): owns one
  LangevinMiddleIntegrator and its Context (made by
  :func:`boltzgen.openmm_context.make_context`), starts it (positions, minimisation,
  velocities) and steps it.
* :func:`run_in_chunks`: the stepping loop: chunks of steps, a reporter after each chunk,
  progress callbacks and a wall-clock deadline.
* :class:`FrameRecorder`: the reporter that records frames (positions, energies, forces) and
  writes them through :class:`boltzgen.h5io.TrajectoryWriter`.

Each method supplies only what differs: umbrella sampling a restraint force, replica exchange
a ladder of Simulations and the exchange step, metadynamics the bias and its deposits.
Units: ps, 1/ps, K, nm, kJ/mol.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mdtraj
import numpy as np
import openmm
import openmm.unit as unit

from boltzgen.errors import InputError
from boltzgen.h5io import TrajectoryWriter
from boltzgen.openmm_context import (
    check_langevin_settings,
    fastest_platform,
    langevin_integrator,
    make_context,
    openmm_seed,
)
from boltzgen.systems import System

__all__ = [
    "FrameRecorder",
    "LangevinConfig",
    "ProgressFn",
    "Simulation",
    "langevin_metadata",
    "resolve_langevin",
    "run_in_chunks",
]

ProgressFn = Callable[[int, int], None]
_NM = unit.nanometer
_KJ = unit.kilojoule_per_mole
_KJ_NM = unit.kilojoule_per_mole / unit.nanometer


@dataclass(frozen=True)
class LangevinConfig:
    """Langevin MD settings (LangevinMiddleIntegrator), written once for every MD entry point.

    Attributes:
        timestep: ps, > 0 (1 fs default: boltzgen's systems have no constraints by default).
        friction: 1/ps, >= 0.
        temperature: K, > 0; None = the System's own temperature.
        platform: OpenMM platform name or ``"auto"``
            (:func:`boltzgen.openmm_context.fastest_platform`).
        seed: seeds the initial velocities and the integrator's random stream.
        threads: CPU-platform threads per Context (None: OpenMM's default, every core).
        platform_properties: OpenMM platform properties, passed as given.
    """

    timestep: float = 0.001
    friction: float = 1.0
    temperature: float | None = None
    platform: str = "auto"
    seed: int = 0
    threads: int | None = 1
    platform_properties: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        check_langevin_settings(self.timestep, self.friction)
        if self.temperature is not None and not float(self.temperature) > 0:
            raise InputError(f"temperature must be > 0 K, got {self.temperature}")
        if not isinstance(self.platform, str) or not self.platform:
            raise InputError(
                f"platform must be an OpenMM platform name or 'auto', got {self.platform!r}"
            )
        if self.threads is not None and int(self.threads) < 1:
            raise InputError(f"threads must be >= 1 (or None), got {self.threads}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed:
            raise InputError(f"seed must be an integer, got {self.seed!r}")
        object.__setattr__(self, "timestep", float(self.timestep))
        object.__setattr__(self, "friction", float(self.friction))
        object.__setattr__(self, "seed", int(self.seed))

    def temperature_of(self, system: System) -> float:
        """The temperature (K) a simulation of ``system`` runs at."""
        return float(system.temperature if self.temperature is None else self.temperature)

    def replace(self, **changes: Any) -> LangevinConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)


def resolve_langevin(
    langevin: LangevinConfig | None,
    default: LangevinConfig,
    deprecated_in: str | None = None,
    **keywords: Any,
) -> LangevinConfig:
    """The config of a call that takes ``langevin=`` and, for one release, the old keywords
    (timestep=, friction=, temperature=, platform=, seed=, threads=, ...; None = not given).

    ``langevin`` wins if given (with an old keyword too: :class:`InputError`); otherwise
    ``default`` with the given keywords replaced. ``deprecated_in`` names the function whose
    old keywords are deprecated (a DeprecationWarning); None keeps them plain."""
    given = {k: v for k, v in keywords.items() if v is not None}
    if langevin is not None:
        if given:
            raise InputError(
                f"pass the Langevin settings either as langevin= or as {sorted(given)}, not both"
            )
        if not isinstance(langevin, LangevinConfig):
            raise InputError(f"langevin must be a LangevinConfig, got {type(langevin).__name__}")
        return langevin
    if given and deprecated_in:
        warnings.warn(
            f"{deprecated_in}({', '.join(f'{k}=' for k in sorted(given))}...) is deprecated; "
            "pass langevin=boltzgen.LangevinConfig(...)",
            DeprecationWarning,
            stacklevel=3,
        )
    return default.replace(**given) if given else default


def langevin_metadata(**fields: Any) -> dict[str, Any]:
    """The metadata an MD file records (``/boltzgen_md``): the given fields (temperature_K,
    timestep_ps, friction_per_ps, seed, platform, ...) plus the integrator and OpenMM's
    version, written the same way by plain MD and replica exchange."""
    return {
        **fields,
        "integrator": "LangevinMiddleIntegrator",
        "openmm_version": openmm.__version__,
    }


def openmm_copy(system: System) -> openmm.System:
    """A fresh ``openmm.System`` of ``system``, to add a bias or restraint force to."""
    return openmm.XmlSerializer.deserialize(system.serialize_openmm())


class Simulation:
    """One Langevin integrator and its Context for ``system``.

    Args:
        system: the molecule (its temperature unless ``langevin.temperature`` is set).
        langevin: the settings (default :class:`LangevinConfig`()).
        openmm_system: the OpenMM system to simulate, e.g. :func:`openmm_copy` (system) with a
            bias force added; default: the system's own.

    ``currentStep`` counts the steps taken (the name ``openmm.app.Metadynamics`` reads).
    """

    def __init__(
        self,
        system: System,
        langevin: LangevinConfig | None = None,
        openmm_system: openmm.System | None = None,
    ) -> None:
        cfg = LangevinConfig() if langevin is None else langevin
        self.system, self.config = system, cfg
        self.temperature = cfg.temperature_of(system)
        self.platform = fastest_platform(system, cfg.platform)
        self.integrator = langevin_integrator(
            self.temperature, cfg.friction, cfg.timestep, cfg.seed
        )
        self.context = make_context(
            system if openmm_system is None else openmm_system,
            self.integrator,
            self.platform,
            cfg.platform_properties,
            threads=cfg.threads,
        )
        self.currentStep = 0

    @property
    def periodic(self) -> bool:
        return self.context.getSystem().usesPeriodicBoundaryConditions()

    def start(
        self,
        positions: np.ndarray | None = None,
        minimize: bool = True,
        velocities: bool = True,
        max_iterations: int = 0,
    ) -> None:
        """Set the start ``positions`` (nm; default the system's), minimise the energy
        (``max_iterations`` 0 = until converged) and draw velocities at the temperature
        (seeded with the config's seed)."""
        self.context.setPositions(self.system.start_positions(positions))
        if minimize:
            openmm.LocalEnergyMinimizer.minimize(self.context, maxIterations=int(max_iterations))
        if velocities:
            self.context.setVelocitiesToTemperature(
                self.temperature * unit.kelvin, openmm_seed(self.config.seed)
            )

    def reseed(self, seed: int) -> None:
        """Restart the integrator's random stream from ``seed``."""
        self.integrator.setRandomNumberSeed(openmm_seed(seed))

    def step(self, n: int) -> None:
        self.integrator.step(int(n))
        self.currentStep += int(n)

    def positions(self) -> np.ndarray:
        """(n_atoms, 3) float64 nm of the Context now."""
        return self.context.getState(positions=True).getPositions(asNumpy=True).value_in_unit(_NM)

    def run(
        self,
        n_steps: int,
        report_interval: int,
        report: Callable[[int], None] | None = None,
        progress: ProgressFn | None = None,
        time_limit: float | None = None,
        min_reports: int = 0,
        **kwargs: Any,
    ) -> int:
        """Step ``n_steps`` in chunks of ``report_interval`` with :func:`run_in_chunks`
        (``report(i)`` after chunk i; ``time_limit`` s of wall clock from now). Returns the
        steps taken."""
        deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
        return run_in_chunks(
            self.step,
            n_steps,
            report_interval,
            report=report,
            progress=progress,
            deadline=deadline,
            min_chunks=min_reports,
            **kwargs,
        )


def run_in_chunks(
    advance: Callable[[int], None],
    n_steps: int,
    chunk: int,
    *,
    report: Callable[[int], None] | None = None,
    progress: ProgressFn | None = None,
    progress_every: int = 1,
    done_before: int = 0,
    total: int | None = None,
    deadline: float | None = None,
    min_chunks: int = 0,
) -> int:
    """Advance ``n_steps`` steps in chunks of ``chunk`` (the last one may be shorter).

    ``advance(k)`` takes k steps (a :meth:`Simulation.step`, a metadynamics step with
    deposits, a replica-exchange ladder, ...). After chunk i: ``report(i)``, then every
    ``progress_every`` chunks and after the last ``progress(done_before + steps, total)``.
    ``deadline`` (a ``time.perf_counter()`` value): no new chunk starts after it once
    ``min_chunks`` chunks are done. Returns the steps taken."""
    n_steps, chunk = int(n_steps), int(chunk)
    if chunk < 1 or n_steps < 0:
        raise InputError(f"need a chunk of >= 1 steps and n_steps >= 0, got {chunk}, {n_steps}")
    total = done_before + n_steps if total is None else int(total)
    done = i = 0
    while done < n_steps:
        if deadline is not None and i >= min_chunks and time.perf_counter() >= deadline:
            break
        k = min(chunk, n_steps - done)
        advance(k)
        done += k
        if report is not None:
            report(i)
        i += 1
        if progress is not None and (i % max(1, progress_every) == 0 or done == n_steps):
            progress(done_before + done, total)
    return done


class FrameRecorder:
    """Frames of a simulation in memory and, with a writer, in an MD file.

    ``record(state, time)`` stores one frame of an ``openmm.State`` taken with positions,
    energy and forces: positions float32 nm (centroid at the origin if ``center``; the
    molecule diffuses under Langevin noise and centring keeps float32 precise; energies and
    forces are translation invariant without periodic boundaries), potential energy kJ/mol,
    forces float32 kJ/mol/nm, time ps. Every ``flush_every`` frames, and at :meth:`close`,
    the new frames go to ``writer`` (:class:`boltzgen.h5io.TrajectoryWriter`).
    """

    def __init__(
        self,
        system: System,
        n_frames: int,
        writer: TrajectoryWriter | None = None,
        center: bool = True,
        flush_every: int = 1000,
    ) -> None:
        self.topology, self.writer = system.topology, writer
        self.center, self.flush_every = bool(center), max(1, int(flush_every))
        self.xyz = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
        self.forces = np.empty((n_frames, system.n_atoms, 3), dtype=np.float32)
        self.energy = np.empty(n_frames)
        self.time = np.empty(n_frames)
        self.n = self._written = 0

    def record(
        self, state: openmm.State, time: float | None = None, step: int | None = None
    ) -> None:
        """Store a frame of ``state`` (``time`` ps, default the state's); a non-finite energy
        raises :class:`InputError` naming ``step``."""
        self.add(
            state.getPositions(asNumpy=True).value_in_unit(_NM),
            state.getPotentialEnergy().value_in_unit(_KJ),
            state.getForces(asNumpy=True).value_in_unit(_KJ_NM),
            state.getTime().value_in_unit(unit.picosecond) if time is None else time,
            step,
        )

    def add(
        self,
        positions: np.ndarray,
        energy: float,
        forces: np.ndarray,
        time: float,
        step: int | None = None,
    ) -> None:
        """Store a frame given as arrays: positions (n_atoms, 3) nm, potential energy kJ/mol,
        forces (n_atoms, 3) kJ/mol/nm, time ps (what :meth:`record` reads from a State, or a
        replica worker sends)."""
        i = self.n
        if not np.isfinite(energy):
            raise InputError(
                f"MD blew up at step {step}: non-finite energy; use a smaller timestep or "
                "minimise first"
            )
        pos = np.asarray(positions)
        self.xyz[i] = pos - pos.mean(axis=0) if self.center else pos
        self.forces[i] = forces
        self.energy[i] = energy
        self.time[i] = time
        self.n += 1
        if self.writer is not None and self.n - self._written >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.append(self.xyz, self.time, self.energy, self.forces, self._written, self.n)
        self._written = self.n

    def close(self) -> None:
        """Write the frames not yet written and close the writer."""
        try:
            self.flush()
        finally:
            if self.writer is not None:
                self.writer.close()

    def trajectory(self) -> mdtraj.Trajectory:
        """The recorded frames (float32 nm, time ps)."""
        n = self.n
        return mdtraj.Trajectory(self.xyz[:n], self.topology, time=self.time[:n])
