"""Batched reduced energies u(x) = E(x)/kT and forces from OpenMM, differentiable in torch.

``EnergyModel(system)(x)`` maps positions x of shape (B, n_atoms, 3) in nm to u (B,) in kT;
its autograd gradient is du/dx = -F/kT. Evaluation runs in-process (``n_workers=1``, no IPC)
or over worker processes that each own one OpenMM Context (``n_workers > 1``; CPU platforms).

Guarantees: every frame is evaluated afresh (no cache), chunks are tagged so results go back to
the frame they came from, a dead worker raises :class:`EnergyWorkerError` instead of hanging,
and an invalid frame (non-finite or overlapping coordinates, non-finite OpenMM energy) gets
u = +inf with a zero gradient and a count in :attr:`EnergyModel.n_invalid`. The console says
so once: one :class:`InvalidConfigurationWarning` per model (with a fixed message, so Python's
default filter shows it once per process), the per-batch details go to the log at DEBUG, and
:meth:`EnergyModel.invalid_summary` gives the counts a stage reports once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import time
import warnings
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import torch

from boltzgen import energy_worker
from boltzgen.errors import EnergyWorkerError, InputError, ShapeError
from boltzgen.openmm_context import (  # platform choice, re-exported here (public API)
    PLATFORM_PREFERENCE,
    available_platforms,
    fastest_platform,
    select_platform,
)
from boltzgen.processes import stop_workers
from boltzgen.systems import System

__all__ = [
    "INVALID_MESSAGE",
    "EnergyModel",
    "InvalidConfigurationWarning",
    "PLATFORM_PREFERENCE",
    "available_platforms",
    "fastest_platform",
    "select_platform",
]

log = logging.getLogger(__name__)


class InvalidConfigurationWarning(UserWarning):
    """Some configurations were invalid and got u = +inf (see ``EnergyModel.n_invalid``)."""


# One fixed text: the warnings registry keys on (text, category, location), so the default
# filter prints it once per process however many batches and models meet invalid frames.
INVALID_MESSAGE = (
    "some configurations invalid (non-finite or overlapping coordinates, or a non-finite "
    "energy): u = +inf with zero gradient; warned once per EnergyModel: its n_invalid, "
    "invalid_counts and invalid_summary() count them, the DEBUG log has each batch"
)


class _EnergyFunction(torch.autograd.Function):
    """u(x) in kT with the gradient -F/kT computed alongside the energy."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, model: EnergyModel) -> torch.Tensor:  # type: ignore[override]
        u, grad = model._reduced(x, need_grad=True)
        ctx.save_for_backward(grad)
        return u

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad_output[:, None, None] * grad, None


class EnergyModel:
    """Reduced energies and forces of a :class:`~boltzgen.systems.System`.

    Args:
        system: the molecule, force field, solvent and temperature.
        platform: OpenMM platform name or ``"auto"`` (see :func:`select_platform`).
        n_workers: number of evaluators. 1 = evaluate in this process (no IPC); k > 1 = this
            process plus k - 1 spawned worker processes, each with its own Context, splitting
            every batch into k chunks (useful on CPU platforms; workers start on first use).
        platform_properties: OpenMM platform properties; on the CPU platform with several
            workers ``Threads`` defaults to ``"1"`` per worker.
        timeout: optional limit in seconds for one batch over workers (None: wait as long as
            the workers are alive; a dead worker is always detected).

    Attributes:
        n_evaluated: running count of frames evaluated.
        n_invalid: running count of frames that got u = +inf.
        invalid_counts: the same split by cause (``nonfinite_input``, ``overlap``,
            ``nonfinite_energy``).
    """

    def __init__(
        self,
        system: System,
        platform: str = "auto",
        n_workers: int = 1,
        platform_properties: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(system, System):
            raise InputError(f"EnergyModel needs a boltzgen System, got {type(system).__name__}")
        if int(n_workers) < 1:
            raise InputError(f"n_workers must be >= 1, got {n_workers}")
        self.system = system
        self.platform = select_platform(platform)
        self.n_workers = int(n_workers)
        props = dict(platform_properties or {})
        if self.platform == "CPU" and self.n_workers > 1:
            props.setdefault("Threads", "1")
        self.platform_properties = props
        self.timeout = timeout
        self.kT = system.kT
        self.n_atoms = system.n_atoms
        self.n_evaluated = 0
        self.n_invalid = 0
        self.invalid_counts = {"nonfinite_input": 0, "overlap": 0, "nonfinite_energy": 0}
        self._warned_invalid = False
        self._xml = system.serialize_openmm()
        self._evaluator: energy_worker.Evaluator | None = None
        self._workers: list[tuple[Any, Any]] = []  # (process, connection)
        self._calls = itertools.count()

    # ------------------------------------------------------------------ public API
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """u(x) in kT, shape (B,), same dtype/device as x; differentiable (du/dx = -F/kT)."""
        x = self._check(x)
        if x.requires_grad and torch.is_grad_enabled():
            return _EnergyFunction.apply(x, self)
        u, _ = self._reduced(x, need_grad=False)
        return u

    def energy_and_forces(self, x: torch.Tensor | np.ndarray) -> tuple[Any, Any]:
        """(u in kT (B,), forces in kJ/mol/nm (B, n_atoms, 3)); torch in -> torch out (same
        dtype/device), numpy in -> numpy float64 out. Invalid frames: u = +inf, forces 0."""
        as_numpy = isinstance(x, np.ndarray)
        xt = self._check(torch.from_numpy(x) if as_numpy else x)
        energy, force = self._evaluate(self._to_numpy(xt), forces=True)
        u = energy / self.kT
        if as_numpy:
            return u, force
        return (
            torch.from_numpy(u).to(dtype=xt.dtype, device=xt.device),
            torch.from_numpy(force).to(dtype=xt.dtype, device=xt.device),
        )

    def energies_kj(self, x: np.ndarray) -> np.ndarray:
        """Potential energies in kJ/mol (B,) for numpy positions (B, n_atoms, 3) nm."""
        xt = self._check(torch.as_tensor(x))
        energy, _ = self._evaluate(self._to_numpy(xt), forces=False)
        return energy

    def invalid_summary(self, since: dict[str, Any] | None = None) -> dict[str, Any]:
        """Invalid frames so far (JSON-able): ``n_evaluated``, ``n_invalid``, ``fraction``
        (0 when nothing was evaluated) and the count per cause. ``since``: an earlier summary
        of this model, to report one stage's share (the difference) rather than the total."""
        out: dict[str, Any] = {"n_evaluated": self.n_evaluated, "n_invalid": self.n_invalid}
        out.update(self.invalid_counts)
        if since is not None:
            out = {k: v - int(since.get(k, 0)) for k, v in out.items()}
        out["fraction"] = out["n_invalid"] / out["n_evaluated"] if out["n_evaluated"] else 0.0
        return out

    @property
    def worker_pids(self) -> list[int]:
        """PIDs of live worker processes (empty in single-worker mode or before first use)."""
        return [p.pid for p, _ in self._workers if p.is_alive()]

    def close(self) -> None:
        """Stop worker processes and release the Context."""
        self._shutdown_workers()
        self._evaluator = None

    def __enter__(self) -> EnergyModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._shutdown_workers()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for DataLoader workers etc.: rebuilt lazily on the other side.
        state = self.__dict__.copy()
        state["_evaluator"] = None
        state["_workers"] = []
        state["_calls"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._calls = itertools.count()

    def __repr__(self) -> str:
        return (
            f"EnergyModel({self.system!r}, platform={self.platform!r}, n_workers={self.n_workers})"
        )

    # ------------------------------------------------------------------ internals
    def _check(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise InputError(f"positions must be a torch tensor or numpy array, got {type(x)!r}")
        if x.dim() != 3 or x.shape[1] != self.n_atoms or x.shape[2] != 3:
            raise ShapeError(
                f"positions must have shape (B, {self.n_atoms}, 3) in nm, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise InputError(f"positions must be floating point (nm), got dtype {x.dtype}")
        return x

    @staticmethod
    def _to_numpy(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float64)

    def _reduced(self, x: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        energy, force = self._evaluate(self._to_numpy(x), forces=need_grad)
        u = torch.from_numpy(energy / self.kT).to(dtype=x.dtype, device=x.device)
        grad = None
        if need_grad:
            grad = torch.from_numpy(force * (-1.0 / self.kT)).to(dtype=x.dtype, device=x.device)
        return u, grad

    def _evaluate(self, x: np.ndarray, forces: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Energies (B,) kJ/mol and forces (B, n, 3) or None from float64 (B, n, 3) nm."""
        if len(x) == 0:
            return np.zeros(0), (np.zeros_like(x) if forces else None)
        if self.n_workers == 1:
            if self._evaluator is None:
                self._evaluator = energy_worker.Evaluator(
                    self._xml, self.platform, self.platform_properties
                )
            status, energy, force = self._evaluator(x, forces)
        else:
            status, energy, force = self._evaluate_parallel(x, forces)
        self.n_evaluated += len(x)
        self._count_invalid(status)
        return energy, force

    def _count_invalid(self, status: np.ndarray) -> None:
        bad = np.flatnonzero(status)
        if len(bad) == 0:
            return
        counts = {
            "nonfinite_input": int(np.sum(status == energy_worker.NONFINITE_INPUT)),
            "overlap": int(np.sum(status == energy_worker.OVERLAP)),
            "nonfinite_energy": int(np.sum(status == energy_worker.NONFINITE_ENERGY)),
        }
        for key, value in counts.items():
            self.invalid_counts[key] += value
        self.n_invalid += len(bad)
        detail = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v)
        log.debug(
            "%d of %d configurations invalid (%s; first index %d): energy set to +inf with "
            "zero gradient (total so far %d)",
            len(bad),
            len(status),
            detail,
            bad[0],
            self.n_invalid,
        )
        if not self._warned_invalid:
            self._warned_invalid = True
            # a fixed location too (this line), so the default filter's registry dedups it
            warnings.warn(INVALID_MESSAGE, InvalidConfigurationWarning, stacklevel=1)

    # ------------------------------------------------------------------ worker pool
    def _start_workers(self) -> None:
        ctx = mp.get_context("spawn")
        workers = []
        try:
            for _ in range(self.n_workers - 1):  # the calling process is the last evaluator
                parent, child = ctx.Pipe(duplex=True)
                proc = ctx.Process(
                    target=energy_worker.worker_main,
                    args=(child, self._xml, self.platform, self.platform_properties),
                    daemon=True,
                )
                proc.start()
                child.close()
                workers.append((proc, parent))
            self._workers = workers
            for k, (proc, conn) in enumerate(workers):
                reply = self._recv(k, proc, conn, deadline=time.monotonic() + 300.0, what="start")
                if reply[0] != "ready":
                    raise EnergyWorkerError(f"energy worker {k} failed to start:\n{reply[2]}")
        except EnergyWorkerError as exc:
            self._shutdown_workers()
            raise EnergyWorkerError(
                f"{exc}. Workers are started with the 'spawn' method: a script that uses "
                "n_workers > 1 must guard its entry point with `if __name__ == '__main__':`"
            ) from exc
        except BaseException:
            self._shutdown_workers()
            raise

    def _recv(self, k: int, proc: Any, conn: Any, deadline: float | None, what: str) -> Any:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([conn, proc.sentinel], timeout=timeout)
            if conn in ready:
                try:
                    return conn.recv()
                except (EOFError, OSError) as exc:
                    raise self._died(k, proc, what) from exc
            if proc.sentinel in ready:
                raise self._died(k, proc, what)
            if deadline is not None and time.monotonic() >= deadline:
                raise EnergyWorkerError(f"energy worker {k} did not answer ({what}) in time")

    def _died(self, k: int, proc: Any, what: str) -> EnergyWorkerError:
        proc.join(timeout=1.0)
        return EnergyWorkerError(
            f"energy worker {k} (pid {proc.pid}) died with exit code {proc.exitcode} during "
            f"{what}; the batch was not evaluated and the worker pool was shut down (it restarts "
            "on the next call)"
        )

    def _evaluate_parallel(
        self, x: np.ndarray, forces: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not self._workers or any(not p.is_alive() for p, _ in self._workers):
            self._shutdown_workers()
            self._start_workers()
        call = next(self._calls)
        bounds = np.linspace(0, len(x), min(self.n_workers, len(x)) + 1).astype(int)
        chunks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        status = np.zeros(len(x), dtype=np.int8)
        energy = np.empty(len(x))
        force = np.empty_like(x) if forces else None
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        n_remote = min(len(self._workers), len(chunks))
        try:
            for k, (a, b) in enumerate(chunks[:n_remote]):
                proc, conn = self._workers[k]
                try:
                    conn.send(((call, k), x[a:b], forces))
                except OSError as exc:
                    raise self._died(k, proc, f"chunk {k}") from exc
            pending = {k: self._workers[k] for k in range(n_remote)}
            if len(chunks) > n_remote:  # the last chunk is evaluated here, meanwhile
                a, b = chunks[n_remote]
                self._evaluate_local(x, a, b, forces, status, energy, force, pending, deadline)
            while pending:
                conns = {conn: k for k, (_, conn) in pending.items()}
                sentinels = {proc.sentinel: k for k, (proc, _) in pending.items()}
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = wait(list(conns) + list(sentinels), timeout=timeout)
                if not ready:
                    raise EnergyWorkerError(
                        f"energy workers did not finish the batch within {self.timeout} s"
                    )
                for obj in ready:
                    if obj in conns and conns[obj] in pending:
                        k = conns[obj]
                        try:
                            reply = obj.recv()
                        except (EOFError, OSError) as exc:
                            raise self._died(k, pending[k][0], f"chunk {k}") from exc
                        tag = reply[0]
                        if tag == "error":
                            raise EnergyWorkerError(f"energy worker {k} failed:\n{reply[2]}")
                        if tag != (call, k):
                            raise EnergyWorkerError(
                                f"energy worker {k} answered request {tag}, expected {(call, k)}"
                            )
                        a, b = chunks[k]
                        status[a:b], energy[a:b] = reply[1], reply[2]
                        if forces:
                            force[a:b] = reply[3]
                        del pending[k]
                for obj in ready:
                    if obj in sentinels and sentinels[obj] in pending:
                        k = sentinels[obj]
                        # A final reply may still sit in the pipe; only a silent death is fatal.
                        if not pending[k][1].poll():
                            raise self._died(k, pending[k][0], f"chunk {k}")
        except BaseException:
            # Never leave half-answered requests in the pipes: the next call starts afresh.
            self._shutdown_workers()
            raise
        return status, energy, force

    def _evaluate_local(
        self,
        x: np.ndarray,
        a: int,
        b: int,
        forces: bool,
        status: np.ndarray,
        energy: np.ndarray,
        force: np.ndarray | None,
        pending: dict[int, tuple[Any, Any]],
        deadline: float | None,
    ) -> None:
        """Evaluate frames a:b in this process, in slices, checking between slices that no
        pending worker has died silently and that the deadline has not passed."""
        if self._evaluator is None:
            self._evaluator = energy_worker.Evaluator(
                self._xml, self.platform, self.platform_properties
            )
        for s in range(a, b, 256):
            e = min(b, s + 256)
            status[s:e], energy[s:e], f = self._evaluator(x[s:e], forces)
            if forces:
                force[s:e] = f
            if deadline is not None and time.monotonic() > deadline:
                raise EnergyWorkerError(
                    f"energy workers did not finish the batch within {self.timeout} s"
                )
            sentinels = {proc.sentinel: k for k, (proc, _) in pending.items()}
            for obj in wait(list(sentinels), timeout=0):
                k = sentinels[obj]
                if not pending[k][1].poll():
                    raise self._died(k, pending[k][0], f"chunk {k}")

    def _shutdown_workers(self) -> None:
        workers, self._workers = self._workers, []
        stop_workers(workers, grace=0.5)
