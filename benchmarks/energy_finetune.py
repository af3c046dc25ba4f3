"""Energy training on top of a likelihood-trained flow (issue 21): does a stage of reverse KL
(mixed with the data likelihood, so no state is lost) raise the flow ESS per core-second more
than more likelihood epochs do?

Takes a model that ``flow_quality.py`` trained (``--work W``: ``W/KEY-MIN-SEED/model.pt`` and
its frames ``W/KEY-MIN-SEED.h5``) and trains copies of it further for the same wall time, one
arm after another, each on one torch thread and one OpenMM evaluator:

* ``nll``: likelihood on the same frames (balanced over backbone sign patterns as the
  benchmark trained them);
* ``mixed:W``: likelihood + W x reverse KL on flow draws (``kl_batch_size`` draws per step);
* ``anneal``: TA-BG-style reweighted likelihood on flow draws at 300 K + data likelihood.

Each arm prints one JSON object: flow-only Kish ESS of ``--draws`` fresh draws (no refinement,
no clipping) before and after, core-seconds, energy evaluations, the state-mass guard (each
backbone sign pattern's flow mass against the data's). Usage::

    python benchmarks/energy_finetune.py --work /tmp/fq/w0 --point adp-60.0-0 --minutes 10 \\
        --arms nll mixed:0.1 mixed:1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from flow_quality import balanced_data, core_seconds  # the sibling benchmark's frames and clock

import boltzgen as bg
from boltzgen.energy import EnergyModel, fastest_platform
from boltzgen.generator.data import TrainingData


def flow_ess(gen, n: int, seed: int) -> tuple[float, int]:
    torch.manual_seed(seed)
    s = gen.sample(n)
    return float(s.ess), int((~np.isfinite(s.log_weights)).sum())


def arm_config(arm: str) -> dict:
    kind, _, w = arm.partition(":")
    if kind == "nll":
        return {"loss": "nll"}
    if kind == "mixed":
        return {"loss": "mixed", "weights": {"nll": 1.0, "kl": float(w or 0.1)}}
    if kind == "kl":
        return {"loss": "kl"}
    if kind == "anneal":
        return {"loss": "anneal", "anneal_start": float(w or 1.0), "anneal_stages": 1}
    raise SystemExit(f"unknown arm {arm!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--point", required=True, help="e.g. adp-60.0-0")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall time per arm")
    ap.add_argument("--arms", nargs="+", default=["nll", "mixed:0.1", "mixed:1"])
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--kl-batch", type=int, default=128)
    ap.add_argument("--draws", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--balance",
        choices=["pipeline", "none"],
        default="pipeline",
        help="frame weights: the pipeline's balancing over backbone states, or every frame alike "
        "(match how the model was trained)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    base = bg.BoltzmannGenerator.load(work / args.point / "model.pt")
    system = base.system
    md = bg.load_md(work / f"{args.point}.h5")
    positions = np.asarray(md.trajectory.xyz)
    if args.balance == "none":
        data = TrainingData(positions, md.forces, np.ones(len(positions)))
    else:
        data = balanced_data(system, positions, md.forces)
    platform = fastest_platform(system)
    base.energy = EnergyModel(system, platform=platform)
    ess0, bad0 = flow_ess(base, args.draws, 10_000 + args.seed)
    print(json.dumps({"point": args.point, "flow_ess_before": ess0, "nonfinite": bad0}), flush=True)
    base.energy = None  # an OpenMM Context does not deep-copy
    for arm in args.arms:
        gen = copy.deepcopy(base)
        gen.energy = EnergyModel(system, platform=platform)
        t0, c0 = time.perf_counter(), core_seconds()
        h = gen.fit(
            data,
            epochs=100_000,
            batch_size=256,
            lr=args.lr,
            lr_schedule="cosine",
            patience=100_000,
            # every frame trains; the epoch kept is the one with the lowest training objective
            # (a held-out NLL would undo what the energy term buys)
            val_fraction=0.0,
            time_limit=60.0 * args.minutes,
            kl_batch_size=args.kl_batch,
            anneal_samples=4096,
            seed=args.seed,
            **arm_config(arm),
        )
        train_s, train_core = time.perf_counter() - t0, core_seconds() - c0
        evals = gen.energy.n_evaluated
        ess, bad = flow_ess(gen, args.draws, 10_000 + args.seed)
        row = {
            "point": args.point,
            "arm": arm,
            "minutes": args.minutes,
            "lr": args.lr,
            "balance": args.balance,
            "flow_ess_before": ess0,
            "flow_ess": ess,
            "nonfinite": bad,
            "epochs": len(h.get("train_loss", [])),
            "stop_reason": h.get("stop_reason"),
            "last_train_loss": h["train_loss"][-1],
            "train_wall_s": train_s,
            "train_core_s": train_core,
            "energy_evals_training": evals,
            "state_guard": h.get("state_guard"),
            "platform": platform,
            "load_avg_1m": os.getloadavg()[0],
        }
        print(json.dumps(row, default=str), flush=True)


if __name__ == "__main__":
    main()
