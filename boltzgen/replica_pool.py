"""The replicas of a replica-exchange ladder, stepped in this process or over worker processes.

Every replica is a :class:`boltzgen.simulation.Simulation` (its own Context and integrator
seed). A :class:`ReplicaGroup` owns some of them and answers the requests replica exchange
makes: start, step (every replica's energy, positions and velocities afterwards), set (one
replica's positions and velocities, after a swap) and frame (one replica's positions, energy
and forces). :class:`ReplicaPool` is the whole ladder: with ``n_workers=1`` one group in this
process (nothing is spawned); with k > 1 this process keeps the first group and k - 1 spawned
processes the others. A step request goes to every worker before this process steps its own
group, so the groups step at the same time; the exchanges are decided by the caller from the
energies.

A replica keeps its Context and seed wherever it runs, and positions and velocities cross the
pipes as exact float64, so on the CPU platform (with the same threads per Context) the
trajectories are bit-identical for any number of workers. The Reference platform draws every
integrator's noise from one random stream per process (OpenMM's ``SimTKOpenMMUtilities``,
seeded when a Context is made), so there the noise a replica gets depends on which replicas
share its process and on their order: a run with k workers is as correct as the serial one
(the same ensemble, tested statistically) but not bitwise the same (the serial run is: the
same seed gives the same trajectories as before this module).
Units: nm, nm/ps, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import traceback
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import openmm.unit as unit

from boltzgen.errors import BoltzgenError, ReplicaWorkerError
from boltzgen.processes import requests, stop_workers
from boltzgen.simulation import LangevinConfig, Simulation
from boltzgen.systems import System

__all__ = ["ReplicaGroup", "ReplicaPool", "replica_seed"]

_NM = unit.nanometer
_NM_PS = unit.nanometer / unit.picosecond
_KJ = unit.kilojoule_per_mole
_KJ_NM = unit.kilojoule_per_mole / unit.nanometer


def replica_seed(seed: int, r: int) -> int:
    """The integrator / velocity seed of replica r of a run seeded with ``seed``."""
    return int(seed) * 1000 + int(r)


class ReplicaGroup:
    """The Simulations of replicas ``indices`` of the ladder ``temps`` (K); replica r runs at
    temps[r] with seed :func:`replica_seed` (cfg.seed, r)."""

    def __init__(
        self, system: System, temps: np.ndarray, cfg: LangevinConfig, indices: list[int]
    ) -> None:
        self.indices = [int(r) for r in indices]
        self.sims = {
            r: Simulation(
                system, cfg.replace(temperature=float(temps[r]), seed=replica_seed(cfg.seed, r))
            )
            for r in self.indices
        }
        self.platform = self.sims[self.indices[0]].platform

    def minimised(self, positions: np.ndarray | None) -> np.ndarray:
        """The start configuration: ``positions`` energy-minimised in the group's first
        replica (n_atoms, 3) nm."""
        first = self.sims[self.indices[0]]
        first.start(positions, velocities=False)
        return first.positions()

    def start(self, positions: np.ndarray) -> None:
        """Every replica at ``positions`` with velocities drawn at its own temperature."""
        for sim in self.sims.values():
            sim.start(positions, minimize=False)

    def step(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every replica ``n`` steps; (energies (G,) kJ/mol, positions (G, n_atoms, 3) nm,
        velocities (G, n_atoms, 3) nm/ps) afterwards, in the order of ``indices``."""
        for sim in self.sims.values():
            sim.step(n)
        states = [
            s.context.getState(energy=True, positions=True, velocities=True)
            for s in self.sims.values()
        ]
        u = np.array([s.getPotentialEnergy().value_in_unit(_KJ) for s in states])
        x = np.stack([s.getPositions(asNumpy=True).value_in_unit(_NM) for s in states])
        v = np.stack([s.getVelocities(asNumpy=True).value_in_unit(_NM_PS) for s in states])
        return u, x, v

    def set(self, r: int, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Replica r takes ``positions`` (nm) and ``velocities`` (nm/ps), e.g. after a swap."""
        context = self.sims[r].context
        context.setPositions(positions)
        context.setVelocities(velocities)

    def frame(self, r: int) -> tuple[np.ndarray, float, np.ndarray]:
        """(positions nm, potential energy kJ/mol, forces kJ/mol/nm) of replica r now."""
        state = self.sims[r].context.getState(positions=True, energy=True, forces=True)
        return (
            state.getPositions(asNumpy=True).value_in_unit(_NM),
            state.getPotentialEnergy().value_in_unit(_KJ),
            state.getForces(asNumpy=True).value_in_unit(_KJ_NM),
        )


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses a pipe, else a ReplicaWorkerError with its traceback."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = "".join(traceback.format_exception(exc))
        return ReplicaWorkerError(f"{type(exc).__name__}: {exc}\n{text}")


def _worker_main(
    conn: Any, system: System, temps: np.ndarray, cfg: LangevinConfig, indices: list[int]
) -> None:
    """A worker process: one ReplicaGroup; requests (name, args) -> ("ok", result) or
    ("error", exception); "set" is answered only when it fails. Ends on None or a closed pipe."""
    try:
        group = ReplicaGroup(system, temps, cfg, indices)
    except Exception as exc:
        conn.send(("error", _picklable(exc)))
        return
    conn.send(("ok", group.platform))
    for name, args in requests(conn):
        try:
            result = getattr(group, name)(*args)
        except Exception as exc:
            conn.send(("error", _picklable(exc)))
            continue
        if name != "set":
            conn.send(("ok", result))


class ReplicaPool:
    """The ladder's replicas in ``n_workers`` groups (:func:`boltzgen.cores.contiguous_groups`
    order): group 0 in this process, the others in spawned worker processes.

    Use as a context manager (or call :meth:`close`) so the workers end with the run.
    """

    def __init__(
        self,
        system: System,
        temps: np.ndarray,
        cfg: LangevinConfig,
        groups: list[list[int]],
    ) -> None:
        self.n_replicas = sum(len(g) for g in groups)
        self.owner = np.empty(self.n_replicas, dtype=np.int64)
        for g, idx in enumerate(groups):
            self.owner[idx] = g
        self._workers: list[tuple[Any, Any]] = []  # (process, connection) of groups 1..
        try:
            ctx = mp.get_context("spawn")  # fork would copy OpenMM's and torch's threads
            for idx in groups[1:]:
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=_worker_main, args=(child, system, temps, cfg, idx), daemon=True
                )
                proc.start()
                child.close()
                self._workers.append((proc, parent))
            self.local = ReplicaGroup(system, temps, cfg, groups[0])  # meanwhile, here
            for k in range(len(self._workers)):
                self._reply(k, "start-up")
        except BaseException:
            self.close()
            raise
        self.platform = self.local.platform

    @property
    def n_workers(self) -> int:
        return 1 + len(self._workers)

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p, _ in self._workers]

    def start(self, positions: np.ndarray | None) -> None:
        """Every replica starts from ``positions`` energy-minimised (in replica 0), with
        velocities drawn at its own temperature."""
        start = self.local.minimised(positions)
        self._each("start", (start,))
        self.local.start(start)
        self._gather("start")

    def step(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Step every replica ``n`` steps, the groups at once; (energies (R,) kJ/mol,
        positions (R, n_atoms, 3) nm, velocities (R, n_atoms, 3) nm/ps) in replica order."""
        self._each("step", (int(n),))
        parts = [self.local.step(n), *self._gather("step")]
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def set(self, r: int, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Replica r takes these positions (nm) and velocities (nm/ps)."""
        g = int(self.owner[r])
        if g == 0:
            self.local.set(r, positions, velocities)
        else:
            self._send(g - 1, ("set", (int(r), positions, velocities)))

    def frame(self, r: int) -> tuple[np.ndarray, float, np.ndarray]:
        """(positions nm, potential energy kJ/mol, forces kJ/mol/nm) of replica r now."""
        g = int(self.owner[r])
        if g == 0:
            return self.local.frame(r)
        self._send(g - 1, ("frame", (int(r),)))
        return self._reply(g - 1, "frame")

    def close(self) -> None:
        """End the worker processes (this process's group stays usable)."""
        workers, self._workers = self._workers, []
        stop_workers(workers, grace=2.0)

    def __enter__(self) -> ReplicaPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the pipes
    def _send(self, k: int, msg: tuple) -> None:
        proc, conn = self._workers[k]
        try:
            conn.send(msg)
        except OSError as exc:
            raise self._died(k, msg[0]) from exc

    def _each(self, name: str, args: tuple) -> None:
        for k in range(len(self._workers)):
            self._send(k, (name, args))

    def _gather(self, what: str) -> list[Any]:
        return [self._reply(k, what) for k in range(len(self._workers))]

    def _reply(self, k: int, what: str) -> Any:
        """Worker k's answer; its error re-raised (a BoltzgenError as itself), its death a
        ReplicaWorkerError."""
        proc, conn = self._workers[k]
        wait([conn, proc.sentinel])
        if not conn.poll():
            raise self._died(k, what)
        try:
            status, value = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(k, what) from exc
        if status == "error":
            if isinstance(value, BoltzgenError):
                raise value
            raise ReplicaWorkerError(f"replica worker {k + 1} failed ({what}): {value}") from value
        return value

    def _died(self, k: int, what: str) -> ReplicaWorkerError:
        proc = self._workers[k][0]
        proc.join(timeout=1.0)
        return ReplicaWorkerError(
            f"replica worker {k + 1} (pid {proc.pid}) died with exit code {proc.exitcode} "
            f"during {what}; a script that runs replica exchange on several cores must guard "
            "its entry point with `if __name__ == '__main__':` (workers are spawned)"
        )
