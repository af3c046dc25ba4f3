"""The sampling stage: weighted draws from the trained flow (as many as the plan pays for,
stopped at a deadline when the number was chosen automatically), then the refinement by
backbone state (:func:`~boltzgen.refinement.planning.refine_within`) with the rest of the
sampling budget. Both are recorded in ``checkpoint_dir`` (``samples.h5``, ``refined.h5``)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.diagnostics.weights import k_hat
from boltzgen.pipeline.config import PipelineConfig
from boltzgen.pipeline.records import Clock, Stages
from boltzgen.pipeline.report import fmt
from boltzgen.refinement import RefinedSamples
from boltzgen.refinement.planning import LEAPFROG, refine_within
from boltzgen.samples import Samples

__all__ = ["refine_stage", "sample_stage"]


def sample_stage(
    gen,
    system,
    config: PipelineConfig,
    split,
    ckpt: Path,
    stages: Stages,
    fp: str,
    clock: Clock,
    plan: dict[str, Any],
) -> tuple[Samples, dict[str, Any]]:
    """(the flow's weighted draws, the sampling record)."""
    done = stages.done("sampling", fp, ["samples.h5"])
    if done is not None:
        clock("sampling", 1.0, "samples from the checkpoint")
        return Samples.load(ckpt / "samples.h5"), {**done, "resumed": True}
    stages.start("sampling", fp)
    t0 = time.perf_counter()
    n = plan["n_samples"]
    deadline = 1.5 * split["sampling"]["seconds"] * (0.5 if plan["refine"] else 0.9)
    torch.manual_seed(config.seed + 1)
    batch = int(np.clip(2_000_000 // (3 * system.n_atoms), 256, 4096))
    parts = []
    drawn = 0
    stopped_early = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid configurations are counted below
        while drawn < n:
            m = min(batch, n - drawn)
            parts.append(gen.sample(m, batch_size=m))
            drawn += m
            frac = drawn / n
            clock("sampling", 0.9 * frac if plan["refine"] else frac, f"{drawn:,}/{n:,} samples")
            if plan["auto"] and time.perf_counter() - t0 > deadline and drawn < n:
                stopped_early = True
                break
    samples = Samples.concatenate(parts) if len(parts) > 1 else parts[0]
    samples.save(ckpt / "samples.h5")
    result = {
        "n_samples": len(samples),
        "planned": plan["n_samples"],
        "auto": plan["auto"],
        "stopped_at_deadline": stopped_early,
        "ess": float(samples.ess),
        "k_hat": k_hat(samples.log_weights),  # the ESS's trust: a heavy tail hides from it
        "n_eff": float(samples.n_eff),
        "seconds_per_sample_estimated": plan["seconds_per_sample"],
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("sampling", fp, result)
    return samples, {**result, "resumed": False}


def refine_stage(
    gen,
    samples: Samples,
    config: PipelineConfig,
    ckpt: Path,
    stages: Stages,
    fp: str,
    clock: Clock,
    plan: dict[str, Any],
) -> tuple[RefinedSamples | None, dict[str, Any]]:
    """Stratified annealed SMC (:func:`~boltzgen.refinement.refine`) from the flow toward the
    Boltzmann target: the strata are the backbone states (sign patterns of phi / psi), each gets
    about the same number of particles (as many as the budget pays for) and its proposal
    mass q(k) from all flow draws; off when ``config.refine`` is false."""
    if not config.refine:
        return None, {"status": "off (refine=False)"}
    done = stages.done("refinement", fp, ["refined.h5"])
    if done is not None:
        clock("sampling", 1.0, "refined samples from the checkpoint")
        return RefinedSamples.load(ckpt / "refined.h5"), {**done, "resumed": True}
    stages.start("refinement", fp)
    t0 = time.perf_counter()
    clock("sampling", 0.9, "refining by backbone state")
    refined, summary = refine_within(
        gen,
        samples,
        plan["refine_seconds"],
        eval_seconds=plan["energy_force_s"],
        n_steps=config.refine_steps,
        n_leapfrog=LEAPFROG,
        seed=config.seed,
        progress=lambda f, m: clock("sampling", 0.9 + 0.1 * f, f"refining: {m}"),
    )
    refined.save(ckpt / "refined.h5")
    result = {
        "status": "done",
        "n_steps": config.refine_steps,
        "planned_seconds": plan["refine_seconds"],
        "unspent_seconds_added": plan.get("unspent_seconds", 0.0),
        **summary,
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("refinement", fp, result)
    clock("sampling", 1.0, f"refined: ESS {fmt(result['ess'], '.3f')}")
    return refined, {**result, "resumed": False}
