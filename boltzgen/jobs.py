"""Job kinds: the units of work the service (or any executor) runs, defined in the library.

A job kind is a pydantic parameter model plus a function

    run(params, workdir: Path, progress: Callable[[float, str], None], checkpoint_dir: Path) -> dict

that writes its artifacts (files) into ``workdir``, reports progress as a fraction in [0, 1]
with a short message, keeps whatever it needs to resume in ``checkpoint_dir`` (which survives a
crash and is handed to the next attempt), and returns a JSON-able summary. Adding a kind is one
decorated function::

    @job_kind("train", TrainParams, gpu=True)
    def train(params: TrainParams, workdir, progress, checkpoint_dir) -> dict: ...

Kinds that act on a molecule take ``SystemParams`` (field ``system``: a ``System.to_spec()``
dict); kinds that reuse a trained generator take ``ModelParams`` (field ``model``: the path of a
saved generator). The service fills both from ``system_id`` / ``model_id``; a client never sends
them. A field typed ``ArtifactPath`` takes an artifact id from the client (e.g. a simulate
job's ``trajectory.h5``) and holds that file's path inside the job. A result with the key ``RESULT_MODEL_FILE`` names a file in ``workdir`` that the service
registers as a reusable model.

Executors talk to a job through a directory (``run_job_dir``): ``job.json`` in, ``progress.jsonl``
and ``result.json`` out, so a local subprocess and a Ray task run the same code.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from boltzgen.errors import BoltzgenError, JobParamsError

ProgressFn = Callable[[float, str], None]
RunFn = Callable[[Any, Path, ProgressFn, Path], dict[str, Any]]

#: A result key naming a file in ``workdir`` that the service registers as a reusable model.
RESULT_MODEL_FILE = "model_file"
#: Environment variable: comma-separated modules imported before running a job (plugin kinds).
PLUGINS_ENV = "BOLTZGEN_JOB_MODULES"


@dataclass(frozen=True)
class JobKind:
    """A registered job kind. ``gpu`` asks executors that schedule GPUs (Ray) for one."""

    name: str
    params: type[BaseModel]
    run: RunFn
    description: str
    gpu: bool = False

    @property
    def needs_system(self) -> bool:
        return issubclass(self.params, SystemParams)

    @property
    def needs_model(self) -> bool:
        return issubclass(self.params, ModelParams)

    @property
    def artifact_fields(self) -> list[str]:
        return artifact_fields(self.params)

    def client_schema(self) -> dict[str, Any]:
        """JSON schema of the parameters a client sends (without the service-filled fields)."""
        schema = self.params.model_json_schema()
        props = dict(schema.get("properties", {}))
        required = [r for r in schema.get("required", []) if r not in _SERVICE_FIELDS]
        for name in _SERVICE_FIELDS:
            props.pop(name, None)
        return {**schema, "properties": props, "required": required}


_KINDS: dict[str, JobKind] = {}
_SERVICE_FIELDS = ("system", "model")


def job_kind(
    name: str, params: type[BaseModel], *, gpu: bool = False, description: str | None = None
) -> Callable[[RunFn], RunFn]:
    """Register ``fn`` as the job kind ``name`` with parameter model ``params``."""

    def register(fn: RunFn) -> RunFn:
        old = _KINDS.get(name)
        if old is not None and old.run.__qualname__ != fn.__qualname__:
            raise ValueError(f"job kind {name!r} is already registered by {old.run.__qualname__}")
        doc = description or (fn.__doc__ or name).strip().splitlines()[0]
        _KINDS[name] = JobKind(name=name, params=params, run=fn, description=doc, gpu=gpu)
        return fn

    return register


def job_kinds() -> dict[str, JobKind]:
    """All registered kinds by name (after importing plugin modules named in the environment)."""
    load_plugins()
    return dict(_KINDS)


def get_kind(name: str) -> JobKind:
    """The kind ``name``; raises JobParamsError naming the known kinds."""
    kinds = job_kinds()
    if name not in kinds:
        raise JobParamsError(f"unknown job kind {name!r}; known kinds: {sorted(kinds)}")
    return kinds[name]


def validate_params(kind: str | JobKind, params: dict[str, Any]) -> BaseModel:
    """Validate ``params`` for ``kind``; raises JobParamsError with pydantic's field messages."""
    k = get_kind(kind) if isinstance(kind, str) else kind
    try:
        return k.params.model_validate(params)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise JobParamsError(f"invalid parameters for job kind {k.name!r}: {msgs}") from exc


def load_plugins(modules: str | None = None) -> None:
    """Import plugin modules (comma-separated; default: ``$BOLTZGEN_JOB_MODULES``)."""
    import importlib

    spec = modules if modules is not None else os.environ.get(PLUGINS_ENV, "")
    for mod in filter(None, (m.strip() for m in spec.split(","))):
        importlib.import_module(mod)


# ---------------------------------------------------------------- parameter bases


class ArtifactRef:
    """Field marker: the client sends the id of one of its artifacts (e.g. the
    ``trajectory.h5`` of a simulate job); the service checks ownership and hands the job the
    file's path instead. Use through ``ArtifactPath``."""

    def __repr__(self) -> str:
        return "ArtifactRef()"


#: A parameter holding an artifact id on the wire and a file path inside the job.
ArtifactPath = Annotated[str, ArtifactRef()]


def _refers_to_artifact(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        return any(isinstance(m, ArtifactRef) for m in meta) or _refers_to_artifact(base)
    return any(_refers_to_artifact(a) for a in get_args(tp))


def artifact_fields(params: type[BaseModel]) -> list[str]:
    """Names of the ``ArtifactPath`` fields of a parameter model (``ArtifactPath | None`` too)."""
    return [
        name
        for name, f in params.model_fields.items()
        if any(isinstance(m, ArtifactRef) for m in f.metadata) or _refers_to_artifact(f.annotation)
    ]


class JobParams(BaseModel):
    """Base of all job parameters: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SystemParams(JobParams):
    """Parameters of a kind that acts on a molecular system."""

    system: dict[str, Any] = Field(
        description="System.to_spec() of the system; filled in by the service from system_id"
    )

    def load_system(self):
        """The ``boltzgen.systems.System`` described by ``system``."""
        from boltzgen.systems import System

        return System.from_spec(self.system)


class ModelParams(SystemParams):
    """Parameters of a kind that reuses a trained Boltzmann generator."""

    model: str = Field(
        description="path of a saved generator (gen.save); filled in by the service from model_id"
    )


# ---------------------------------------------------------------- executor protocol (directory)


class _ProgressWriter:
    """Append-only JSON-lines progress log, throttled to a few lines per second."""

    def __init__(self, path: Path, min_interval: float = 0.2) -> None:
        self.path = path
        self.min_interval = min_interval
        self._last = 0.0
        self._pending: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        with self._lock:
            self._pending = (fraction, str(message)[:500])
            now = time.monotonic()
            if now - self._last >= self.min_interval or fraction >= 1.0:
                self._flush(now)

    def _flush(self, now: float) -> None:
        if self._pending is None:
            return
        fraction, message = self._pending
        line = json.dumps({"t": time.time(), "progress": fraction, "message": message})
        with open(self.path, "a") as fh:
            fh.write(line + "\n")
        self._pending = None
        self._last = now

    def close(self) -> None:
        with self._lock:
            self._flush(time.monotonic())


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def job_dir_paths(jobdir: Path) -> dict[str, Path]:
    """The files of the directory protocol under ``jobdir``."""
    jobdir = Path(jobdir)
    return {
        "job": jobdir / "job.json",
        "work": jobdir / "work",
        "checkpoint": jobdir / "checkpoint",
        "progress": jobdir / "progress.jsonl",
        "result": jobdir / "result.json",
    }


def run_job_dir(jobdir: str | Path, checkpoint_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the job described by ``jobdir/job.json`` (``{"kind", "params"}``).

    Writes artifacts to ``jobdir/work``, progress lines to ``jobdir/progress.jsonl`` and the
    outcome to ``jobdir/result.json``: ``{"status": "succeeded", "result": {...}}`` or
    ``{"status": "failed", "retryable": bool, "error": {"type", "message"}}``. A BoltzgenError
    (bad input) is not retryable; any other exception is. Returns the outcome.
    """
    paths = job_dir_paths(Path(jobdir))
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else paths["checkpoint"]
    paths["work"].mkdir(parents=True, exist_ok=True)
    ckpt.mkdir(parents=True, exist_ok=True)
    progress = _ProgressWriter(paths["progress"])
    try:
        spec = json.loads(paths["job"].read_text())
        kind = get_kind(spec["kind"])
        params = validate_params(kind, spec.get("params", {}))
        result = kind.run(params, paths["work"], progress, ckpt)
        json.dumps(result)  # must be JSON-able
        outcome: dict[str, Any] = {"status": "succeeded", "result": result}
    except BoltzgenError as exc:
        outcome = {
            "status": "failed",
            "retryable": False,
            "error": {"type": type(exc).__name__, "message": str(exc)},
        }
    except Exception as exc:
        outcome = {
            "status": "failed",
            "retryable": True,
            "error": {
                "type": type(exc).__name__,
                "message": str(exc) or type(exc).__name__,
                "traceback": traceback.format_exc(limit=20),
            },
        }
    finally:
        progress.close()
    _write_json_atomic(paths["result"], outcome)
    return outcome


def _watch_parent(interval: float = 1.0) -> None:
    """Exit this process when its parent dies (a killed worker must not leave orphan jobs)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    """``python -m boltzgen.jobs JOBDIR [CHECKPOINT_DIR]``: run one job (used by executors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or len(argv) > 2:
        print("usage: python -m boltzgen.jobs JOBDIR [CHECKPOINT_DIR]", file=sys.stderr)
        return 2
    if os.environ.get("BOLTZGEN_JOB_WATCH_PARENT") == "1":
        _watch_parent()
    import torch

    torch.set_num_threads(int(os.environ.get("BOLTZGEN_JOB_THREADS", "1")))
    outcome = run_job_dir(argv[0], argv[1] if len(argv) > 1 else None)
    if outcome["status"] == "succeeded":
        return 0
    return 1 if outcome.get("retryable") else 3


# ---------------------------------------------------------------- kinds


class SimulateParams(SystemParams):
    """Langevin MD of a system (``boltzgen.simulate``), checkpointed in chunks."""

    n_steps: int = Field(gt=0, le=500_000_000, description="MD steps")
    timestep: float = Field(0.002, gt=0.0, le=0.01, description="ps")
    report_interval: int = Field(100, gt=0, description="steps between saved frames")
    seed: int = Field(0, ge=0)
    platform: str = Field("auto", description="OpenMM platform name or 'auto'")
    checkpoint_interval: int | None = Field(
        None,
        gt=0,
        description="steps between checkpoints (rounded to a multiple of report_interval); "
        "default: n_steps / 10, at least 10000",
    )

    @model_validator(mode="after")
    def _check(self) -> SimulateParams:
        if self.report_interval > self.n_steps:
            raise ValueError(
                f"report_interval ({self.report_interval}) exceeds n_steps ({self.n_steps})"
            )
        if self.n_steps % self.report_interval:
            raise ValueError(
                f"n_steps ({self.n_steps}) must be a multiple of report_interval "
                f"({self.report_interval})"
            )
        return self


@job_kind("simulate", SimulateParams)
def simulate(
    params: SimulateParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Run MD and write trajectory.h5 (mdtraj HDF5 with per-frame energies and forces)."""
    return _run_simulate(params, workdir, progress, checkpoint_dir)


def _run_simulate(
    params: SimulateParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """MD in chunks of ``checkpoint_interval`` steps, each saved to ``checkpoint_dir`` before
    the next starts; a resumed attempt skips the saved chunks. Chunk k > 0 starts from the last
    frame of chunk k-1 with velocities drawn afresh at T (seed ``seed``, chunk k): a valid move
    for Langevin dynamics, and the same whether or not the job was interrupted, so a resumed
    run reproduces an uninterrupted one on a deterministic platform."""
    from boltzgen.md import _Writer, load_md
    from boltzgen.md import simulate as md_simulate

    system = params.load_system()
    n, every = params.n_steps, params.report_interval
    chunk = params.checkpoint_interval or max(n // 10, 10_000)
    chunk = max(every, chunk // every * every)
    state_path = checkpoint_dir / "simulate.json"
    state = {"done": 0, "chunks": []}
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("params") != params.model_dump(exclude={"system"}) or not all(
            (checkpoint_dir / c).exists() for c in state["chunks"]
        ):
            state = {"done": 0, "chunks": []}  # stale or incomplete checkpoint: start over
    resumed_from = state["done"]
    progress(
        state["done"] / n, f"{state['done']}/{n} steps" + (" (resumed)" if resumed_from else "")
    )
    while state["done"] < n:
        k = len(state["chunks"])
        steps = min(chunk, n - state["done"])
        start = None
        if k:
            start = load_md(checkpoint_dir / state["chunks"][-1]).trajectory.xyz[-1]
        tmp = checkpoint_dir / f"chunk-{k:05d}.part.h5"
        base = state["done"]

        def report(done: int, total: int, base: int = base) -> None:
            progress((base + done) / n, f"{base + done}/{n} steps")

        md_simulate(
            system,
            n_steps=steps,
            timestep=params.timestep,
            report_interval=every,
            out=tmp,
            seed=params.seed * 100_003 + k,
            minimize=k == 0,
            platform=params.platform,
            positions=start,
            progress=report,
        )
        name = f"chunk-{k:05d}.h5"
        os.replace(tmp, checkpoint_dir / name)
        state = {
            "done": base + steps,
            "chunks": [*state["chunks"], name],
            "params": params.model_dump(exclude={"system"}),
        }
        _write_json_atomic(state_path, state)
    out = workdir / "trajectory.h5"
    meta = {
        "temperature_K": system.temperature,
        "timestep_ps": params.timestep,
        "report_interval_steps": every,
        "n_steps": n,
        "seed": params.seed,
        "checkpoint_interval_steps": chunk,
        "integrator": "LangevinMiddleIntegrator",
    }
    writer = _Writer(out, system, meta)
    energies = []
    try:
        t0 = 0.0
        for name in state["chunks"]:
            d = load_md(checkpoint_dir / name)
            times = d.time - d.time[0] + t0 + every * params.timestep
            writer.append(d.trajectory.xyz, times, d.potential_energy, d.forces, 0, len(times))
            t0 = times[-1]
            energies.append(d.potential_energy)
    finally:
        writer.close()
    energy = np.concatenate(energies)
    progress(1.0, f"{n}/{n} steps")
    return {
        "n_frames": int(len(energy)),
        "n_steps": n,
        "simulated_ps": n * params.timestep,
        "resumed_from_step": int(resumed_from),
        "n_chunks": len(state["chunks"]),
        "mean_potential_energy_kj_mol": float(energy.mean()),
        "std_potential_energy_kj_mol": float(energy.std()),
        "trajectory": out.name,
    }


class EnergyParams(SystemParams):
    """Reduced energies and forces of given frames (default: the system's own positions)."""

    positions: list[list[list[float]]] | None = Field(
        None, description="frames (B, n_atoms, 3) in nm; default: the uploaded structure"
    )
    platform: str = Field("auto", description="OpenMM platform name or 'auto'")


@job_kind("energy", EnergyParams)
def energy(
    params: EnergyParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Evaluate energies.npz: reduced energies (kT), potential energies (kJ/mol), forces."""
    import numpy as np

    from boltzgen.energy import EnergyModel
    from boltzgen.errors import ShapeError

    system = params.load_system()
    x = system.positions[None] if params.positions is None else np.asarray(params.positions)
    if x.ndim != 3 or x.shape[1:] != (system.n_atoms, 3):
        raise ShapeError(f"positions must be (B, {system.n_atoms}, 3) nm, got {x.shape}")
    progress(0.0, f"evaluating {len(x)} frame(s)")
    with EnergyModel(system, platform=params.platform) as model:
        u, forces = model.energy_and_forces(x.astype(np.float64))
    np.savez(
        workdir / "energies.npz",
        reduced_energy=u,
        potential_energy=u * system.kT,
        forces=forces,
        kT=system.kT,
    )
    progress(1.0, "done")
    finite = np.isfinite(u)
    return {
        "n_frames": int(len(u)),
        "n_invalid": int((~finite).sum()),
        "min_reduced_energy": float(u[finite].min()) if finite.any() else None,
        "mean_reduced_energy": float(u[finite].mean()) if finite.any() else None,
        "kT_kj_mol": float(system.kT),
    }


# Built-in kinds defined beside the science they run (importing registers them).
from boltzgen.generator import jobs as _generator_jobs  # noqa: E402,F401

if __name__ == "__main__":  # run via the real module so plugin kinds share one registry
    from boltzgen.jobs import main as _main

    raise SystemExit(_main())
