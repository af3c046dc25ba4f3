"""The data stage: training frames by temperature replica exchange on a ladder sized from the
molecule (the target replica's frames) or by metadynamics over the state dihedrals with the
bias then frozen (frames weighted exactly by exp(V/kT)); steps calibrated so the run fills its
share of the budget. The frames go to ``checkpoint_dir`` (``remd.h5`` or ``metad.npz``)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from boltzgen.cores import resolve_cores
from boltzgen.cv import state_dihedrals
from boltzgen.enhanced import replica_exchange
from boltzgen.errors import InputError
from boltzgen.md import calibrate_md, load_md
from boltzgen.metadynamics import metadynamics
from boltzgen.pipeline.config import PipelineConfig, data_sampler
from boltzgen.pipeline.records import Clock, Stages
from boltzgen.remd_ladder import calibrate_remd, temperature_ladder
from boltzgen.simulation import LangevinConfig

__all__ = ["data_stage", "load_stage_data"]


def _langevin(config, threads: int = 1) -> LangevinConfig:
    """The pipeline's MD settings (the run's seed; ``threads`` CPU-platform threads per
    Context)."""
    return LangevinConfig(
        timestep=config.timestep, seed=config.seed, platform=config.platform, threads=threads
    )


def _remd_workers(cores: int, n_replicas: int) -> tuple[int, int]:
    """(processes stepping the replicas, CPU-platform threads per Context) for ``cores``:
    one process per core up to one per replica; cores left over go to each Context's threads
    (the CPU platform's; Reference has none), so the threads never exceed ``cores``."""
    n_workers = min(cores, n_replicas)
    return n_workers, max(1, cores // n_workers)


def _fastest_remd(system, temps, config, budget: float, clock) -> tuple:
    """(calibration, processes, MD settings, every calibration tried) of the faster way to
    run the ladder on ``config.cores``: one process (its Contexts get the cores' threads on
    the CPU platform) or one process per core up to one per replica (:func:`_remd_workers`).
    Both are timed: the replicas advance in lock-step, each exchange waiting for the slowest
    process, and on a busy machine a small, fast molecule lost more to that waiting than the
    second core gave (benchmarks/RESULTS.md, 2026-12-04); with one core, one timing."""
    cores = resolve_cores(config.cores)
    seconds = min(3.0, max(0.5, 0.03 * budget))
    best, tried = None, {}
    for k in sorted({1, min(cores, len(temps))}):
        threads = max(1, cores // k)
        lang = _langevin(config, threads)
        clock("data", 0.0, f"calibrating REMD ({len(temps)} replicas, {k} processes)")
        cal = calibrate_remd(system, temps, seconds=seconds, langevin=lang, n_workers=k)
        tried[str(k)] = cal
        # steps that fit in the budget once the workers are up
        steps = cal["steps_per_second"] * max(0.0, budget - cal["setup_seconds"])
        if best is None or steps > best[0]:
            best = (steps, cal, k, lang)
    _, cal, k, lang = best
    return cal, k, lang, tried


def data_stage(
    system, config: PipelineConfig, split, ckpt: Path, stages: Stages, fp: str, clock: Clock
) -> dict[str, Any]:
    """The data stage's record (from the checkpoint when its inputs are unchanged)."""
    if data_sampler(config.sampler) == "metad":
        return _metad_stage(system, config, split, ckpt, stages, fp, clock)
    return _remd_stage(system, config, split, ckpt, stages, fp, clock)


def _metad_steps(cal: dict, left: float, budget: float, n_atoms: int) -> tuple[int, int, int]:
    """(steps learning the bias, steps sampling with it frozen, report interval) that fit in
    ``left`` seconds at the calibrated rate ``cal``; InputError when fewer than 20 frames."""
    # steps at the plain-MD rate are an upper bound: bias deposits (dearer with more CVs) and
    # frame reads slow metadynamics down, so the run is held to the time left instead
    total = int(max(left - cal["setup_seconds"], 0.0) * cal["steps_per_second"])
    n_learn = int(0.3 * total) // 500 * 500
    report = max(50, math.ceil((total - n_learn) / frame_cap(n_atoms) / 50) * 50)
    n_prod = (total - n_learn) // report * report
    if n_prod < 20 * report or n_learn < 500:
        need = (40 * report + 1000) / cal["steps_per_second"] + cal["setup_seconds"]
        raise InputError(
            f"the data budget ({budget:.0f} s) is too small for {n_atoms} atoms: MD runs "
            f"{cal['steps_per_second']:.0f} steps/s, metadynamics needs about {need:.0f} s; "
            "raise the budget or data_share"
        )
    return n_learn, n_prod, report


def _metad_stage(system, config, split, ckpt: Path, stages: Stages, fp: str, clock) -> dict:
    """Metadynamics over the state dihedrals (30 % of the steps learn the bias, 70 % sample
    with it frozen), frames with their exact log-weights V/kT to ``metad.npz``."""
    done = stages.done("data", fp, ["metad.npz"])
    if done is not None:
        clock("data", 1.0, "metadynamics data from the checkpoint")
        return {**done, "resumed": True}
    stages.start("data", fp)
    t0 = time.perf_counter()
    budget = split["data"]["seconds"]
    cvs = list(state_dihedrals(system).values())
    clock("data", 0.0, "calibrating MD speed")
    lang = _langevin(config, threads=resolve_cores(config.cores))  # one simulation
    cal = calibrate_md(system, seconds=min(3.0, max(0.5, 0.03 * budget)), langevin=lang)
    left = budget - (time.perf_counter() - t0)
    n_learn, n_prod, report = _metad_steps(cal, left, budget, system.n_atoms)
    names = ", ".join(c.name for c in cvs)
    clock("data", 0.02, f"metadynamics over {names}")

    def report_progress(done: int, tot: int) -> None:
        clock("data", 0.02 + 0.98 * done / max(tot, 1), f"metadynamics {done:,}/{tot:,} steps")

    r = metadynamics(
        system,
        cvs,
        n_metadynamics_steps=n_learn,
        n_steps=n_prod,
        report_interval=report,
        langevin=lang,
        time_limit=max(left, 1.0),
        progress=report_progress,
    )
    part = ckpt / "metad.part.npz"
    with open(part, "wb") as fh:
        np.savez(fh, positions=r.positions, log_weight=r.log_weights, cv=r.cv)
    os.replace(part, ckpt / "metad.npz")
    crossings = {
        c.name: int((np.diff(np.signbit(r.cv[:, i]).astype(np.int8)) != 0).sum())
        for i, c in enumerate(cvs)
    }
    result = {
        "sampler": "metad",
        "file": "metad.npz",
        "dihedrals": [c.name for c in cvs],
        "n_learning_steps": r.settings["n_metadynamics_steps"],
        "n_steps": r.settings["n_steps"],
        "report_interval_steps": report,
        "simulated_ns": (r.settings["n_metadynamics_steps"] + r.settings["n_steps"])
        * config.timestep
        / 1000.0,
        "n_frames": int(len(r.bias)),
        "ess": float(r.ess),
        "sign_changes": crossings,
        "bias_factor": r.settings["bias_factor"],
        "calibration": cal,
        "platform": r.settings.get("platform"),
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("data", fp, result)
    clock("data", 1.0, f"{result['n_frames']} frames, ESS {100 * result['ess']:.0f} %")
    return {**result, "resumed": False}


def load_stage_data(ckpt: Path, data_rec: dict) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """(positions (N, n_atoms, 3) nm, forces or None, log-weights (N,) or None for unbiased
    frames) of the data stage's file."""
    if data_rec.get("sampler") == "metad":
        with np.load(ckpt / data_rec["file"]) as d:
            return np.asarray(d["positions"]), None, np.asarray(d["log_weight"], dtype=np.float64)
    md = load_md(ckpt / data_rec.get("file", "remd.h5"))
    return np.asarray(md.trajectory.xyz), md.forces, None


_EXCHANGE = 100  # REMD steps between exchange attempts
MAX_FRAMES = 100_000
_FRAME_BYTES = 2.5e8  # positions + forces kept in memory, float32


def frame_cap(n_atoms: int) -> int:
    """Most training frames a data stage keeps: 100,000, or fewer when their positions and
    forces (float32) would pass 250 MB. Why so many: frames 0.4 ps apart are not redundant
    for the flow. On ADP (benchmarks/RESULTS.md, 2026-12-05), the same 8 ns of REMD kept
    every 0.4 ps (20,000 frames) against every 1.6 ps (5,000) gave flow ESS 13-14 % against
    2-5 % and a test NLL 1.06 nats lower at equal training time; the 5,000-frame flow
    overfitted (early stopping after 2 minutes)."""
    return int(max(20, min(MAX_FRAMES, _FRAME_BYTES // (24 * max(1, int(n_atoms))))))


def _remd_steps(
    cal: dict, left: float, budget: float, n_atoms: int, n_replicas: int
) -> tuple[int, int, int]:
    """(equilibration steps, production steps, report interval) per replica that fit in
    ``left`` seconds at the calibrated rate ``cal``; InputError when fewer than 20 frames."""
    total_steps = int(0.97 * max(left, 0.0) * cal["steps_per_second"])
    n_equil = min(20_000, total_steps // 10) // _EXCHANGE * _EXCHANGE
    n_prod = total_steps - n_equil
    # one frame per exchange interval or sparser, at most frame_cap frames
    cap = frame_cap(n_atoms)
    report = max(_EXCHANGE, math.ceil(n_prod / cap / _EXCHANGE) * _EXCHANGE)
    n_prod = n_prod // report * report
    if n_prod < 20 * report:
        need = (20 * report + n_equil) / cal["steps_per_second"] + cal["setup_seconds"]
        raise InputError(
            f"the data budget ({budget:.0f} s) is too small for {n_atoms} atoms with "
            f"{n_replicas} replicas: REMD runs {cal['steps_per_second']:.0f} steps/s, 20 frames "
            f"need about {need:.0f} s; raise the budget or data_share"
        )
    return n_equil, n_prod, report


def _remd_stage(system, config, split, ckpt: Path, stages: Stages, fp: str, clock) -> dict:
    """Replica exchange on the ladder from the molecule's size, the target replica's frames
    (with energies and forces) to ``remd.h5``."""
    done = stages.done("data", fp, ["remd.h5"])
    if done is not None:
        clock("data", 1.0, "REMD data from the checkpoint")
        return {**done, "resumed": True}
    stages.start("data", fp)
    t0 = time.perf_counter()
    budget = split["data"]["seconds"]
    temps, ladder = temperature_ladder(
        system, config.t_max, config.target_acceptance, config.max_replicas
    )
    cal, n_workers, lang, tried = _fastest_remd(system, temps, config, budget, clock)
    left = budget - (time.perf_counter() - t0) - cal["setup_seconds"]
    n_equil, n_prod, report = _remd_steps(cal, left, budget, system.n_atoms, len(temps))
    clock("data", 0.02, f"REMD {len(temps)} replicas {temps[0]:.0f}-{temps[-1]:.0f} K")
    part = ckpt / "remd.part.h5"
    total = n_prod + n_equil

    def report_progress(done: int, tot: int) -> None:
        clock("data", 0.02 + 0.98 * done / max(tot, 1), f"REMD {done:,}/{tot:,} steps")

    r = replica_exchange(
        system,
        temps,
        n_steps=n_prod,
        exchange_interval=_EXCHANGE,
        report_interval=report,
        n_equilibration=n_equil,
        langevin=lang,
        out=part,
        progress=report_progress,
        n_workers=n_workers,
    )
    os.replace(part, ckpt / "remd.h5")
    walkers = np.unique(r.replica_of_frame)
    result = {
        "sampler": "remd",
        "file": "remd.h5",
        "temperatures_K": r.temperatures.tolist(),
        "ladder": ladder,
        "acceptance": r.acceptance.tolist(),
        "mean_acceptance": float(np.nanmean(r.acceptance)),
        "min_acceptance": float(np.nanmin(r.acceptance)),
        "n_attempts": r.n_attempts.tolist(),
        "n_steps_per_replica": n_prod,
        "n_equilibration_steps": n_equil,
        "simulated_ns_per_replica": total * config.timestep / 1000.0,
        "exchange_interval_steps": _EXCHANGE,
        "report_interval_steps": report,
        "n_frames": int(r.trajectory.n_frames),
        "walkers_at_target": len(walkers),
        "calibration": cal,
        "platform": r.settings.get("platform"),
        "cores": resolve_cores(config.cores),
        "replica_processes": n_workers,
        "threads_per_context": lang.threads,
        "calibrations": tried,
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("data", fp, result)
    clock(
        "data", 1.0, f"{r.trajectory.n_frames} frames, acceptance {result['mean_acceptance']:.2f}"
    )
    return {**result, "resumed": False}
