"""The training stage: frames balanced over the backbone states
(:func:`~boltzgen.generator.balance.pattern_weights`), a flow sized from the molecule
(:func:`~boltzgen.generator.config.flow_size`), the sampling plan from measured rates, then
training by likelihood until the training budget (plus what the data stage left) is spent."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.cores import resolve_cores
from boltzgen.energy import EnergyModel, fastest_platform
from boltzgen.generator.balance import backbone_state_labels, pattern_weights, weights_kish
from boltzgen.generator.config import FlowConfig, TrainConfig, flow_size
from boltzgen.generator.data import TrainingData
from boltzgen.generator.model import BoltzmannGenerator
from boltzgen.generator.workflow import train_model
from boltzgen.pipeline.config import PipelineConfig
from boltzgen.pipeline.records import Clock, Stages
from boltzgen.refinement.planning import measure_rates

__all__ = ["energy_model", "plan_samples", "train_stage"]


def energy_model(system, config: PipelineConfig) -> EnergyModel:
    """The energies of the run: one evaluator per core (this process and cores - 1 workers,
    each with one Context and one thread) when that is measured faster than this process
    alone on a batch of 512 frames, else this process alone. Timed because the workers split
    every batch and wait for each other: on a busy machine two were slower than one at every
    batch size tried (benchmarks/RESULTS.md, 2026-12-04). The workers are started here, so
    the rates measured for the sampling plan do not include their start."""
    platform = fastest_platform(system, config.platform)
    n = resolve_cores(config.cores)
    single = EnergyModel(system, platform=platform)
    if n == 1:
        return single
    several = EnergyModel(system, platform=platform, n_workers=n)
    x = torch.as_tensor(np.repeat(system.positions[None], 512, axis=0))
    several.energy_and_forces(x[:n])  # start the workers
    seconds = {}
    for model in (single, several, single, several):
        t0 = time.perf_counter()
        model.energy_and_forces(x)
        seconds[model] = min(seconds.get(model, math.inf), time.perf_counter() - t0)
    keep, drop = (several, single) if seconds[several] < seconds[single] else (single, several)
    drop.close()
    return keep


def plan_samples(config: PipelineConfig, split, system, rates) -> dict[str, Any]:
    """How many samples (and refinement evaluations) the sampling budget pays for."""
    budget = split["sampling"]["seconds"]
    refine_on = bool(config.refine)
    per_sample = rates["flow_s"] + rates["energy_s"]
    draw_time = budget * (0.5 if refine_on else 0.9)
    mem_cap = int(2.5e8 // (12 * system.n_atoms))  # about 250 MB of float32 positions
    if config.n_samples is not None:
        n = int(config.n_samples)
        auto = False
    else:
        n = int(np.clip(draw_time / per_sample, 1000, min(200_000, mem_cap)))
        auto = True
    # refinement gets the other half; how many draws it can move is decided once their
    # weights are known (:func:`~boltzgen.refinement.planning.plan_refinement`)
    expected = n * per_sample + (0.5 * budget if refine_on else 0.0)
    return {
        "n_samples": n,
        "auto": auto,
        "refine_seconds": 0.5 * budget if refine_on else 0.0,
        "energy_force_s": rates["energy_force_s"],
        "refine": refine_on,
        "expected_seconds": expected,
        "surplus_seconds": max(0.0, budget - expected) if auto else 0.0,
        "seconds_per_sample": per_sample,
    }


#: the last quarter of the training share: back to the best weights, every frame, the rate
#: from lr / 5 to 0 (on the one-hour ADP flows, 8 minutes of it gave +7 and +10 points of
#: flow ESS over the plateau schedule's best weights; benchmarks/RESULTS.md, 2026-12-05)
FINISH_FRACTION = 0.25


def likelihood_config(lr: float, time_limit: float, seed: int) -> TrainConfig:
    """The pipeline's maximum-likelihood training: batch 256, plateau schedule (patience 50)
    until the finish (:data:`FINISH_FRACTION` of ``time_limit`` seconds), then the finish."""
    return TrainConfig(
        epochs=100_000,
        batch_size=256,
        lr=lr,
        patience=50,
        lr_schedule="plateau",
        finish_fraction=FINISH_FRACTION,
        time_limit=time_limit,
        seed=seed,
    )


def balanced_data(system, config: PipelineConfig, positions, forces, log_w):
    """(TrainingData with frame weights balanced over the backbone states, the balance
    record for the summary)."""
    labels, state_names = backbone_state_labels(system, positions)
    frame_w = None if log_w is None else np.exp(log_w - np.max(log_w))
    weights, table = pattern_weights(
        labels,
        config.min_state_share,
        config.min_state_frames,
        frame_weights=frame_w,
        min_kish=config.min_weight_kish,
    )
    balance = {
        "dihedrals": state_names,
        "states": table,
        "min_share": config.min_state_share,
        "weights_kish": weights_kish(weights),
    }
    return TrainingData(positions, forces, weights), balance


def _architecture(system, config: PipelineConfig) -> tuple[FlowConfig, dict[str, Any]]:
    """The flow's architecture (the size rule unless the config overrides it) and its
    record for the summary (without the parameter count)."""
    dim = 3 * system.n_atoms - 6
    rule = flow_size(dim)
    arch = FlowConfig(
        flow=config.flow,
        n_layers=config.n_layers or rule["n_layers"],
        hidden=tuple(config.hidden or rule["hidden"]),
        seed=config.seed,
    )
    info = {
        "dim": dim,
        "rule": rule,
        "flow": arch.flow,
        "n_layers": arch.n_layers,
        "hidden": list(arch.hidden),
        "lr": config.lr,
    }
    return arch, info


def train_stage(
    system,
    energy,
    config: PipelineConfig,
    split,
    ckpt: Path,
    stages: Stages,
    fp: str,
    clock: Clock,
    positions: np.ndarray,
    forces,
    log_w: np.ndarray | None,
    wall_before: float,
):
    """Returns (the trained generator, the training record, the balance record, the
    sampling plan); the model comes from the checkpoint when its inputs are unchanged.
    ``wall_before``: seconds the system and data stages took (what they left of their
    share goes to training)."""
    td, balance = balanced_data(system, config, positions, forces, log_w)
    arch, flow_info = _architecture(system, config)
    gen = BoltzmannGenerator.build(system, data=td, config=arch)
    gen.energy = energy
    plan = plan_samples(config, split, system, measure_rates(gen, positions))
    flow_info["n_parameters"] = int(sum(p.numel() for p in gen.parameters()))
    done = stages.done("training", fp, ["training/model.pt"])
    if done is not None:
        clock("training", 1.0, "model from the checkpoint")
        gen = BoltzmannGenerator.load(ckpt / "training" / "model.pt", system)
        gen.energy = energy
        return gen, {**done, "resumed": True}, balance, plan
    if not stages.start("training", fp):
        (ckpt / "train.pt").unlink(missing_ok=True)  # a checkpoint of other inputs
    del gen
    # the training budget plus what the data stage left and the sampling plan does not need
    limit = split["training"]["seconds"] + max(0.0, split["data"]["seconds"] - wall_before)
    limit += plan["surplus_seconds"]
    limit = max(5.0, limit)
    train_cfg = likelihood_config(config.lr, limit, config.seed)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    clock("training", 0.0, f"{arch.n_layers} layers x {list(arch.hidden)}, {limit:.0f} s")

    def on_progress(fraction: float, message: str) -> None:
        elapsed = time.perf_counter() - t0
        clock("training", min(0.99, elapsed / limit), message)

    gen, summary = train_model(
        system,
        td,
        ckpt / "training",
        architecture=arch,
        train=train_cfg,
        checkpoint=ckpt / "train.pt",
        progress=on_progress,
    )
    gen.energy = energy
    result = {
        **flow_info,
        "n_parameters": summary["n_parameters"],
        "time_limit_s": limit,
        "epochs_run": summary["epochs_run"],
        "stop_reason": summary["stop_reason"],
        "best_val_nll": summary["best_val_nll"],
        "finish": summary["finish"],
        "n_frames": summary["n_frames"],
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("training", fp, result)
    clock("training", 1.0, f"{result['epochs_run']} epochs ({result['stop_reason']})")
    return gen, {**result, "resumed": False}, balance, plan
