"""Time the stages left unspent goes to the weakest stratum: after every flow's refinement,
until the analysis share of the budget begins, rounds of further particles for the stratum
with the fewest effective particles over all flows (re-chosen each round; the verdicts are
then made on the merged populations). Recorded as ``summary["leftover_spent"]`` and, with the
merged populations, in ``checkpoint_dir`` so that a rerun resumes it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from boltzgen.diagnostics.thresholds import MIN_STATE_MASS
from boltzgen.pipeline.config import PipelineConfig
from boltzgen.pipeline.records import Clock, Stages
from boltzgen.refinement import RefinedSamples
from boltzgen.refinement.planning import LEAPFROG
from boltzgen.refinement.topup import refine_stratum, stratum_effective_particles, weakest_stratum

__all__ = ["leftover_stage"]

_MAX_ROUNDS = 6


def _min_round(config: PipelineConfig) -> float:
    """Shortest slice worth a round: setting up a refinement costs seconds."""
    return max(5.0, 0.01 * 60.0 * config.budget_minutes)


def _weakest(finals: list) -> tuple[int, dict[str, Any]] | None:
    """(flow, stratum row) with the fewest effective particles over the refined flows."""
    found = [
        (k, row)
        for k, f in enumerate(finals)
        if isinstance(f, RefinedSamples)
        and (row := weakest_stratum(f, min_share=MIN_STATE_MASS)) is not None
    ]
    return min(found, key=lambda kr: stratum_effective_particles(kr[1])) if found else None


def leftover_stage(
    gens: list,
    flow_samples: list,
    finals: list,
    config: PipelineConfig,
    deadline: float,
    eval_seconds: float,
    ckpt: Path,
    stages: Stages,
    fp: str,
    clock: Clock,
    resumable: bool,
) -> tuple[list, dict[str, Any]]:
    """(the flows' final samples, some with a stratum topped up; the record: seconds
    available and spent, and per round the flow, stratum, particles added and the stratum's
    effective particles and the population's ESS before and after).

    ``deadline``: ``time.perf_counter()`` value at which the analysis share begins;
    ``eval_seconds``: wall seconds per refinement evaluation (the refinements' measured
    seconds / evaluations, overheads included);
    ``resumable``: every flow's refinement was itself resumed (else a record on file
    belongs to other populations and is not used)."""
    files = [f"leftover_flow{k + 1}.h5" for k in range(len(finals))]
    done = stages.done("leftover", fp)
    if resumable and done is not None and all((ckpt / files[k]).exists() for k in done["flows"]):
        for k in done["flows"]:
            finals[k] = RefinedSamples.load(ckpt / files[k])
        return finals, {**done, "resumed": True}
    t0 = time.perf_counter()
    available = deadline - t0
    record: dict[str, Any] = {"seconds_available": max(available, 0.0), "rounds": []}
    if not config.refine or eval_seconds <= 0 or available < _min_round(config):
        record.update(seconds=0.0, flows=[], strata=[], status="no time left")
        stages.save("leftover", fp, record)  # a rerun resumes it: it does not spend its budget
        return finals, {**record, "resumed": False}
    stages.start("leftover", fp)
    changed: set[int] = set()
    for r in range(_MAX_ROUNDS):
        left = deadline - time.perf_counter()
        pick = _weakest(finals)
        if pick is None or left < _min_round(config):
            break
        k, row = pick
        last = r == _MAX_ROUNDS - 1 or left < 2 * _min_round(config)
        seconds = left if last else left / 2
        clock("sampling", 1.0, f"left-over {seconds:.0f} s: flow {k + 1}, stratum {row['label']}")
        finals[k], rec = refine_stratum(
            gens[k],
            flow_samples[k],
            finals[k],
            str(row["label"]),
            seconds,
            eval_seconds=eval_seconds,
            n_steps=config.refine_steps,
            n_leapfrog=LEAPFROG,
            seed=config.seed + 104729 * (r + 1),
        )
        record["rounds"].append({"flow": k + 1, "share": row["share"], **rec})
        if not rec.get("n_added"):
            break  # the time pays for no useful number of particles: stop
        # the next round plans with the rate this one achieved, if slower
        eval_seconds = max(eval_seconds, rec["seconds"] / max(rec["n_energy_evals"], 1))
        changed.add(k)
    record.update(
        seconds=time.perf_counter() - t0,
        flows=sorted(changed),
        strata=[f"flow {x['flow']}: {x['stratum']}" for x in record["rounds"] if x["n_added"]],
        status="done",
    )
    for k in changed:
        finals[k].save(ckpt / files[k])
    stages.save("leftover", fp, record)
    return finals, {**record, "resumed": False}
