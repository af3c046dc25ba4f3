"""``run_pipeline``: the stages in order, each within its share of the budget, each skipped on
a rerun when its inputs are unchanged; then the files, the warnings, ``summary.json`` and
``report.md``. Orchestration only: the science is in the library modules the stages call."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from boltzgen.cores import resolve_cores
from boltzgen.diagnostics.weights import k_hat
from boltzgen.generator.mixture import combine_draws
from boltzgen.jsonable import json_clean
from boltzgen.pipeline.analysis import analysis_stage, resolve_cvs
from boltzgen.pipeline.config import SYSTEM_FIELDS, PipelineConfig, budget_split, make_config
from boltzgen.pipeline.data import data_stage, load_stage_data
from boltzgen.pipeline.leftover import leftover_stage
from boltzgen.pipeline.parallel_training import ParallelTraining
from boltzgen.pipeline.records import (
    DATA_FIELDS,
    SAMPLE_FIELDS,
    TRAIN_FIELDS,
    Clock,
    ProgressFn,
    StageProgressFn,
    Stages,
    fingerprint,
    stage_fields,
    write_json,
)
from boltzgen.pipeline.report import report_markdown
from boltzgen.pipeline.sampling import refine_stage, sample_stage
from boltzgen.pipeline.training import energy_model, train_stage
from boltzgen.samples import clash_fraction
from boltzgen.systems import System

__all__ = ["run_pipeline"]


def run_pipeline(
    pdb_or_system: Any,
    out_dir: str | os.PathLike[str],
    config: PipelineConfig | dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    *,
    stage_progress: StageProgressFn | None = None,
) -> dict[str, Any]:
    """From a PDB (path or text) or a :class:`~boltzgen.systems.System` to results.

    Args:
        pdb_or_system: a PDB with hydrogens, or a System (see :class:`PipelineConfig` for how
            its solvent / temperature / force field combine with the config's).
        out_dir: receives ``report.md``, ``summary.json``, ``model.pt``, ``samples.h5``
            (mdtraj-readable, with the weights), ``history.json``, ``training.png``,
            ``plots/`` and, after refinement, ``flow_samples.h5`` (the unrefined draws).
        config: :class:`PipelineConfig` or a dict of its fields.
        progress: ``progress(fraction, message)`` overall (stages weighted by their budget
            shares); messages start with the stage name.
        checkpoint_dir: stage records and files (``remd.h5`` or ``metad.npz``, ``train.pt``,
            ``training/model.pt``, ``samples.h5``); default ``out_dir/checkpoint``. Finished
            stages with the same inputs are skipped on a rerun.
        stage_progress: ``stage_progress(stage, fraction_of_stage, message)`` (the CLI's bars).

    Returns: the summary (also ``summary.json``): ESS, dF per residue with errors, clash
    fraction, wall time per stage, budget split, data (REMD acceptance or metadynamics
    weights), flow size, files.
    """
    t_start = time.perf_counter()
    config = make_config(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    with _log_file(out / "run.log"):
        return _run(pdb_or_system, config, out, ckpt, progress, stage_progress, t_start)


def _run(
    pdb_or_system: Any,
    config: PipelineConfig,
    out: Path,
    ckpt: Path,
    progress: ProgressFn | None,
    stage_progress: StageProgressFn | None,
    t_start: float,
) -> dict[str, Any]:
    run = _Run(config, out, ckpt, progress, stage_progress)
    system = run.system(pdb_or_system)
    fp = fingerprint(system.to_spec(), stage_fields(config, DATA_FIELDS))
    positions, forces, data_lw = run.data(system, fp)
    fp_train = fingerprint(fp, stage_fields(config, TRAIN_FIELDS))
    fp_sample = fingerprint(fp_train, stage_fields(config, SAMPLE_FIELDS))
    run.start_parallel_training(system, fp_train, positions, forces, data_lw)
    try:
        finals, gens, drawn, first_flow_samples, first_records = _flows(
            run, system, fp_train, fp_sample, positions, forces, data_lw
        )
    finally:
        if run.parallel is not None:
            run.parallel.close()
    run.records.update(first_records)  # the report describes the first flow in detail
    run.mixture = _mixture_record(gens, drawn)
    finals = run.leftover(gens, drawn, finals, fp_sample)
    for gen in gens:
        run.count_invalid("leftover", gen)
    final = finals[0]
    results, figs, clash = run.analysis(
        system, final, first_flow_samples, positions, data_lw, finals[1:]
    )
    run.wall["total"] = time.perf_counter() - t_start
    summary = _summary(pdb_or_system, system, run, final, results, figs, clash)
    (out / "report.md").write_text(report_markdown(summary, figs))
    write_json(out / "summary.json", summary)
    run.clock("analysis", 1.0, "done")
    return json_clean(summary)


def _flows(run: _Run, system: System, fp_train: str, fp_sample: str, positions, forces, data_lw):
    """Each independent flow trained (or its worker's model taken), sampled and refined:
    (final samples, generators, flow draws, flow 0's draws, flow 0's stage records)."""
    finals, gens, drawn = [], [], []
    for k in range(run.config.n_flows):
        gen = run.training(system, fp_train, positions, forces, data_lw, k)
        run.count_invalid("training", gen)
        flow_samples, refined = run.sampling(gen, system, fp_sample, k)
        run.count_invalid("sampling", gen)
        finals.append(refined if refined is not None else flow_samples)
        gens.append(gen)
        drawn.append(flow_samples)
        if k == 0:
            first_flow_samples, first_records = flow_samples, dict(run.records)
        run.flow_records.append(_flow_record(run.records))
    return finals, gens, drawn, first_flow_samples, first_records


@contextlib.contextmanager
def _log_file(path: Path) -> Iterator[None]:
    """The library's log at DEBUG (e.g. each energy batch with invalid configurations) goes to
    ``path`` for the run, so the console says each thing once and the details are on file."""
    logger = logging.getLogger("boltzgen")
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.setLevel(logging.DEBUG)
    # only this run's thread: pipelines running side by side in one process (a service's
    # worker threads) keep their own logs
    handler.addFilter(lambda record, me=threading.get_ident(): record.thread == me)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


@contextlib.contextmanager
def _timed(wall: dict[str, float], stage: str, add: bool = False) -> Iterator[None]:
    """Record the block's wall time as ``wall[stage]`` (added to it with ``add``)."""
    t0 = time.perf_counter()
    yield
    wall[stage] = (wall.get(stage, 0.0) if add else 0.0) + time.perf_counter() - t0


class _Run:
    """One run's settings, stage records, progress, wall times and warnings; one method per
    stage."""

    def __init__(
        self,
        config: PipelineConfig,
        out: Path,
        ckpt: Path,
        progress: ProgressFn | None,
        stage_progress: StageProgressFn | None,
    ) -> None:
        self.config, self.out, self.ckpt = config, out, ckpt
        self.t_start = time.perf_counter()
        self.split = budget_split(config)
        self.clock = Clock(self.split, progress, stage_progress)
        self.stages = Stages(ckpt)
        self.wall: dict[str, float] = {}
        self.notes: list[str] = []
        self.records: dict[str, dict[str, Any]] = {}  # stage -> its record
        self.balance: dict[str, Any] = {}
        self.plan: dict[str, Any] = {}
        self.flow_records: list[dict[str, Any]] = []
        self.mixture: dict[str, Any] | None = None
        self.refine_resumed: list[bool] = []  # per flow: its refinement came from the checkpoint
        self.leftover_record: dict[str, Any] = {}
        self.eval_seconds: list[float] = []  # per refined flow: wall s per evaluation
        self.invalid: dict[str, dict[str, Any]] = {}  # stage -> invalid energies, all flows
        self._invalid_seen: dict[int, dict[str, Any]] = {}  # energy model -> counts so far
        self._flows: dict[int, tuple] = {}  # k -> flow k's (config, ckpt, stages, clock, split)
        # flows trained side by side: 1..n-1 in worker processes while this one trains flow 0
        self.side_by_side = False
        self.parallel: ParallelTraining | None = None

    def _flow(self, k: int) -> tuple[PipelineConfig, Path, Stages, Any, dict]:
        """Flow k's settings (its own seed), checkpoint directory (flow 0: the run's, so a
        single flow keeps the old layout), stage records, progress (``Clock.part``) and budget
        (1/n of training and sampling); made once per flow."""
        if k not in self._flows:
            n = self.config.n_flows
            seed = self.config.seed + 7919 * k
            config = self.config if k == 0 else self.config.model_copy(update={"seed": seed})
            ckpt = self.ckpt if k == 0 else self.ckpt / f"flow{k + 1}"
            ckpt.mkdir(parents=True, exist_ok=True)
            stages = self.stages if k == 0 else Stages(ckpt)
            shared = ("sampling",) if self.side_by_side else ("training", "sampling")
            split = {
                s: ({**v, "seconds": v["seconds"] / n} if s in shared else v)
                for s, v in self.split.items()
            }
            self._flows[k] = (config, ckpt, stages, self.clock.part(k, n), split)
        return self._flows[k]

    def system(self, pdb_or_system: Any) -> System:
        self.clock("system", 0.0, "building the system")
        with _timed(self.wall, "system"):
            system = _resolve_system(pdb_or_system, self.config)
        self.clock(
            "system", 1.0, f"{system.n_atoms} atoms, {system.solvent}, {system.temperature:g} K"
        )
        resolve_cvs(system, self.config.cvs)  # an unknown CV fails now, not after the budget
        return system

    def data(self, system: System, fp: str) -> tuple:
        """The training frames: (positions, forces or None, log-weights or None)."""
        with _timed(self.wall, "data"):
            rec = data_stage(
                system, self.config, self.split, self.ckpt, self.stages, fp, self.clock
            )
        self.records["data"] = rec
        if (rec.get("min_acceptance") or 1.0) < 0.1:
            self.notes.append(
                f"REMD neighbour acceptance as low as {rec['min_acceptance']:.2f}: the "
                "replicas mix poorly; lower t_max or raise target_acceptance"
            )
        return load_stage_data(self.ckpt, rec)

    def _wall_before_training(self) -> float:
        return self.records["data"].get("wall_time_s", self.wall["data"]) + self.wall["system"]

    def start_parallel_training(self, system: System, fp: str, positions, forces, data_lw):
        """With n_flows > 1 and at least as many cores, flows 1..n-1 start training in worker
        processes now (:mod:`~boltzgen.pipeline.parallel_training`), each for the whole
        training share, and flow 0 trains here; otherwise the flows train one after the
        other, each for 1/n of it. Flows already trained (a resume) get no worker."""
        n = self.config.n_flows
        if n < 2 or resolve_cores(self.config.cores) < n:
            return
        self.side_by_side = True  # before any _flow(k): each flow gets the whole training share
        jobs = {}
        for k in range(1, n):
            config, ckpt, stages, _, split = self._flow(k)
            if stages.done("training", fp, ["training/model.pt"]) is None:
                args = (system.to_spec(), config, split, ckpt, fp, positions, forces, data_lw)
                jobs[k] = (*args, self._wall_before_training())
        self.parallel = ParallelTraining(jobs)

    def training(self, system: System, fp: str, positions, forces, data_lw, k: int = 0):
        """Flow k's trained generator (its energy set)."""
        config, ckpt, stages, clock, split = self._flow(k)
        before = self._wall_before_training()
        by_worker = False
        if self.parallel is not None and self.parallel.has(k):  # its worker trained it
            error = self.parallel.wait(k)
            stages.reload()
            by_worker = error is None
            if error is not None:  # trained here after all, in 1/n of the training share
                self.notes.append(f"flow {k + 1} trained after the others: its worker failed")
                logging.getLogger("boltzgen").warning("flow %d training worker: %s", k + 1, error)
                t = split["training"]
                split = {**split, "training": {**t, "seconds": t["seconds"] / self.config.n_flows}}
        if k > 0 and not by_worker:  # what the data stage left went to the first flow
            before = max(before, split["data"]["seconds"])
        with _timed(self.wall, "training", add=k > 0):
            gen, self.records["training"], self.balance, self.plan = train_stage(
                system,
                energy_model(system, config),
                config,
                split,
                ckpt,
                stages,
                fp,
                clock,
                positions,
                forces,
                data_lw,
                before,
            )
        if self.side_by_side:
            self.records["training"].update(parallel=True)
            if by_worker:
                self.records["training"]["resumed"] = False
        return gen

    def sampling(self, gen, system: System, fp: str, k: int = 0):
        """(flow k's samples, its refined samples or None)."""
        c, ckpt, stages, clock, split = self._flow(k)
        plan, rec = self.plan, self.records
        with _timed(self.wall, "sampling", add=k > 0):
            flow_samples, rec["sampling"] = sample_stage(
                gen, system, c, split, ckpt, stages, fp, clock, plan
            )
            refined, rec["refinement"] = refine_stage(
                gen, flow_samples, c, ckpt, stages, fp, clock, self._refine_plan(k)
            )
            clock("sampling", 1.0, f"{len(flow_samples):,} samples")
        ref = rec["refinement"]
        self.refine_resumed.append(bool(ref.get("resumed")))
        if ref.get("seconds") and ref.get("n_energy_evals"):  # measured, overheads included
            self.eval_seconds.append(ref["seconds"] / ref["n_energy_evals"])
        return flow_samples, refined

    def count_invalid(self, stage: str, gen) -> None:
        """Add the invalid configurations ``gen``'s energy met since it was last counted to
        ``stage``'s count (all flows together): the console reports one line per run."""
        energy = getattr(gen, "energy", None)
        if not hasattr(energy, "invalid_summary"):
            return
        now = energy.invalid_summary()
        part = energy.invalid_summary(since=self._invalid_seen.get(id(energy)))
        self._invalid_seen[id(energy)] = now
        acc = self.invalid.setdefault(stage, {"n_evaluated": 0, "n_invalid": 0})
        for key, value in part.items():
            if key != "fraction":
                acc[key] = acc.get(key, 0) + value
        acc["fraction"] = acc["n_invalid"] / acc["n_evaluated"] if acc["n_evaluated"] else 0.0

    def leftover(self, gens: list, drawn: list, finals: list, fp: str) -> list:
        """The flows' final samples after the time left before the analysis share went to
        the weakest stratum (:func:`~boltzgen.pipeline.leftover.leftover_stage`)."""
        total = 60.0 * self.config.budget_minutes
        deadline = self.t_start + total - self.split["analysis"]["seconds"]
        with _timed(self.wall, "leftover"):
            finals, rec = leftover_stage(
                gens,
                drawn,
                finals,
                self.config,
                deadline,
                max(self.eval_seconds, default=self.plan.get("energy_force_s") or 0.0),
                self.ckpt,
                self.stages,
                fp,
                self.clock,
                resumable=all(self.refine_resumed),
            )
        self.leftover_record = _without_resumed(rec)
        return finals

    def _refine_plan(self, k: int = 0) -> dict[str, Any]:
        """The sampling plan with the refinement's time raised to whatever the stages before
        it left unspent (a training that stopped early, a short data stage): the budget up to
        the end of the sampling stage goes to refinement, not back to the user unused."""
        plan = dict(self.plan)
        if not plan.get("refine"):
            return plan
        n = self.config.n_flows  # flow k must end by its 1/n of training and sampling
        flows = sum(self.split[s]["seconds"] for s in ("training", "sampling"))
        end = self.t_start + self.split["data"]["seconds"] + (k + 1) * flows / n
        if self.side_by_side:  # trained side by side, then sampled one after the other
            train, samp = self.split["training"]["seconds"], self.split["sampling"]["seconds"]
            end = self.t_start + self.split["data"]["seconds"] + train + (k + 1) * samp / n
        left = end - time.perf_counter()
        if left > plan["refine_seconds"]:
            plan["unspent_seconds"] = left - plan["refine_seconds"]
            plan["refine_seconds"] = left
        return plan

    def analysis(self, system: System, final, flow_samples, positions, data_lw, others=()):
        """(free energies and ESS curve, figures, clash check of the flow's draws); writes the
        samples, the model and its training history into the output directory. ``others``:
        the final samples of the other independent flows (their dF join each number's)."""
        out, ckpt = self.out, self.ckpt
        with _timed(self.wall, "analysis"):
            self.clock("analysis", 0.0, "clash check")
            clash = clash_fraction(flow_samples, system.topology)
            results, figs = analysis_stage(
                system, final, positions, data_lw, self.config, out, self.clock, clash, others
            )
            self.clock("analysis", 0.9, "writing files")
            final.save(out / "samples.h5")
            if final is not flow_samples:
                shutil.copyfile(ckpt / "samples.h5", out / "flow_samples.h5")
            for name in ("model.pt", "history.json", "training.png"):
                src = ckpt / "training" / name
                if src.exists():
                    shutil.copyfile(src, out / name)
            self.notes += _warnings(_ess(final), results["free_energies"], clash)
        return results, figs, clash


def _mixture_record(gens: list, drawn: list, per_flow: int = 10_000) -> dict[str, Any] | None:
    """The independent flows' draws (the first ``per_flow`` of each: i.i.d., so a fair
    subset, and the cost of every flow's log q at every draw stays bounded) weighed as one
    sample of their mixture (:func:`~boltzgen.generator.mixture.combine_draws`): its flow ESS
    beside each flow's. None for one flow."""
    if len(gens) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid configurations were counted when drawn
        mix = combine_draws(gens, [d[:per_flow] for d in drawn])
    return {
        "n_flows": len(gens),
        "n_samples": len(mix),
        "flow_ess": _ess(mix),
        "flow_k_hat": k_hat(mix.log_weights),
        "flow_ess_each": [_ess(d) for d in drawn],
    }


def _ess(samples) -> float:
    return float(samples.ess) if np.isfinite(samples.log_weights).any() else float("nan")


def _warnings(ess: float, free_energies: dict[str, Any], clash: dict[str, Any]) -> list[str]:
    """What the summary should warn about: too few effective samples, samples and data that
    disagree on a dF, clashing flow samples."""
    notes = []
    if not ess > 0.001:
        notes.append(
            f"ESS {100 * ess:.3f} %: the weighted estimates rest on very few samples; "
            "raise the budget (longer sampling and training)"
        )
    for name, row in free_energies.items():
        df, err, dd, de = (row.get(k) for k in ("df_kT", "err_kT", "df_data_kT", "err_data_kT"))
        finite = all(isinstance(v, float) and math.isfinite(v) for v in (df, err, dd, de))
        if finite and abs(df - dd) > 2.0 * math.hypot(err, de):
            notes.append(
                f"dF {name}: the samples give {df:.2f} +- {err:.2f} kT but the training "
                f"data {dd:.2f} +- {de:.2f}: more than 2 sigma apart. Either the flow misses "
                "part of a state (its error bar cannot see that) or the data are not "
                "converged; raise the budget"
            )
    if clash["clash_fraction"] > 0.1:
        notes.append(
            f"{100 * clash['clash_fraction']:.1f} % of the flow samples clash or have infinite "
            "energy: the flow is undertrained for this molecule"
        )
    return notes


def _summary(pdb_or_system, system: System, run: _Run, final, results, figs, clash) -> dict:
    """The run's summary (``summary.json``, see :func:`run_pipeline`)."""
    ess = _ess(final)
    config = run.config
    return {
        "system": {
            "name": _system_name(pdb_or_system, system),
            "n_atoms": system.n_atoms,
            "n_residues": len({r.resSeq for r in system.topology.residues}),
            "dim": 3 * system.n_atoms - 6,
            "solvent": system.solvent,
            "temperature_K": float(system.temperature),
            "forcefield": list(system.forcefield),
        },
        "config": config.model_dump(mode="json"),
        "budget": {"total_seconds": 60.0 * config.budget_minutes, "split": run.split},
        "ess": ess,
        "n_samples": len(final),
        "n_eff": float(final.n_eff) if np.isfinite(ess) else None,
        "free_energies": results["free_energies"],
        "verdict": _overall_verdict(results["free_energies"]),
        "state_populations": results["state_populations"],
        "flows": run.flow_records,
        "flows_mixture": run.mixture,
        "clash_fraction": clash["clash_fraction"],
        "clash": clash,
        "invalid_configurations": run.invalid,
        "data": _without_resumed(run.records["data"]),
        "balance": run.balance,
        "flow": _without_resumed(run.records["training"]),
        "sampling": {**_without_resumed(run.records["sampling"]), "plan": run.plan},
        "refine": _without_resumed(run.records["refinement"]),
        "leftover_spent": run.leftover_record,
        "ess_curve": results["ess_curve"],
        "wall_time_s": run.wall,
        "stages": {
            "system": {"resumed": False},
            **{s: {"resumed": bool(r.get("resumed", False))} for s, r in run.records.items()},
            "analysis": {"resumed": False},
        },
        "warnings": run.notes,
        "checkpoint_dir": str(run.ckpt),
        "files": {
            "log": "run.log",
            "report": "report.md",
            "summary": "summary.json",
            "model": "model.pt",
            "samples": "samples.h5",
            "plots": figs,
        },
    }


def _flow_record(records: dict[str, Any]) -> dict[str, Any]:
    """One independent flow in a line: its training, draws and refinement."""
    t, smp, ref = (records.get(k, {}) for k in ("training", "sampling", "refinement"))
    return {
        "epochs_run": t.get("epochs_run"),
        "best_val_nll": t.get("best_val_nll"),
        "flow_ess": smp.get("ess"),
        "flow_k_hat": smp.get("k_hat"),
        "n_samples": smp.get("n_samples"),
        "refined_ess": ref.get("ess"),
        "n_energy_evals": ref.get("n_energy_evals"),
    }


def _overall_verdict(free_energies: dict[str, Any]) -> str:
    """``reliable`` when every reported number is, else ``not converged``."""
    ok = all(row.get("verdict") == "reliable" for row in free_energies.values())
    return "reliable" if ok else "not converged"


def _without_resumed(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "resumed"}


def _resolve_system(pdb_or_system: Any, config: PipelineConfig) -> System:
    """The System of a PDB, or the given System with the config's explicitly set system
    fields applied."""
    if isinstance(pdb_or_system, System):
        spec = pdb_or_system.to_spec()
        changed = False
        for name in sorted(set(SYSTEM_FIELDS) & config.model_fields_set):
            value = getattr(config, name)
            value = list(value) if name == "forcefield" else value
            if spec.get(name) != value:
                spec[name] = value
                changed = True
        return System.from_spec(spec) if changed else pdb_or_system
    return System.from_pdb(
        pdb_or_system,
        forcefield=tuple(config.forcefield),
        solvent=config.solvent,
        temperature=config.temperature,
    )


def _system_name(pdb_or_system: Any, system) -> str:
    if isinstance(pdb_or_system, str | os.PathLike) and len(str(pdb_or_system)) < 4096:
        p = Path(pdb_or_system)
        if "\n" not in str(pdb_or_system) and p.suffix:
            return p.name
    seq = "-".join(r.name for r in system.topology.residues)
    return seq[:80] if seq else f"{system.n_atoms}-atom molecule"
