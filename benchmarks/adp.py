"""Alanine dipeptide Boltzmann-generator benchmark: train, sample, ESS, dF(phi), wall time.

Prints one JSON object per (solvent, flow) run. The energy target may differ from the solvent
the data were made in (e.g. a flow trained on vacuum REMD data, reweighted to OBC): the
importance weights correct for it, at the cost of ESS.

    python benchmarks/adp.py --data data/adp-vacuum-remd.h5 --solvent vacuum --flow smooth \
        --flow spline --minutes 20 --samples 20000
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch

from boltzgen.generator.config import FlowConfig, TrainConfig

# argument defaults are the library's (written once, in boltzgen.generator.config)
FLOW = FlowConfig().model_dump()
TRAIN = TrainConfig().model_dump()


def run(args, flow: str, solvent: str) -> dict:
    import boltzgen as bg
    from boltzgen.generator.workflow import train_model

    # several files (e.g. REMD + plain MD at the same temperature) are joined into one set
    md = bg.concatenate_md([bg.load_md(path) for path in args.data])
    # frames of another ensemble (e.g. vacuum REMD for an OBC target) only shape the proposal:
    # they widen its support where the target's own data are thin; the importance weights
    # exp(-u_target) / q remove their bias from every estimate
    train_data = bg.TrainingData.join(
        [bg.TrainingData(md.trajectory.xyz, md.forces)]
        + [bg.TrainingData(bg.load_md(path).trajectory.xyz) for path in args.proposal_data or ()]
    )
    data_system = md.system()
    system = bg.System.from_spec({**data_system.to_spec(), "solvent": solvent})
    # plain MD adds frames only to phi < 0, so phi > 0 ends up with far less than its
    # equilibrium share; --phi-positive-share gives it a fixed share of the minibatch draws
    balance = (
        {"cv": "phi", "states": [(0.0, math.pi)], "shares": [args.phi_positive_share]}
        if args.phi_positive_share
        else None
    )
    out = f"{args.out}/{solvent}-{flow}"
    t0 = time.perf_counter()
    gen, ts = train_model(
        system,
        train_data,
        out,
        balance=balance,
        architecture={
            "flow": flow,
            "n_layers": args.layers,
            "hidden": tuple(args.hidden),
            "n_components": args.components,
            "seed": args.seed,
            "tails": args.tails,
            "margin": args.margin,
        },
        train={
            "epochs": 10_000,
            "time_limit": 60 * args.minutes,
            "patience": args.patience,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "lr_schedule": "plateau",
            "seed": args.seed,
        },
    )
    t_train = time.perf_counter() - t0
    rows = [_evaluate(args, gen, system, md, out, flow, solvent, ts, t0, t_train)]
    for target in args.reweight_to or []:
        # the same flow as a proposal for another solvent model: weights exp(-u_target) / q
        other = bg.System.from_spec({**data_system.to_spec(), "solvent": target})
        gen.energy = bg.EnergyModel(other, platform="CPU")
        label = f"{target} (flow trained for {solvent}, reweighted)"
        t1 = time.perf_counter()
        rows.append(_evaluate(args, gen, other, md, f"{out}-as-{target}", flow, label, ts, t1, 0.0))
    return rows


def _evaluate(args, gen, system, md, out, flow, solvent, ts, t0, t_train) -> dict:
    from boltzgen.generator.workflow import free_energy_report, sample_to_files

    samples, ss = sample_to_files(
        gen, args.samples, out, seed=args.seed, reference=md.trajectory.xyz
    )
    fe = free_energy_report(samples, system, out, cv="phi", seed=args.seed, reference=md.trajectory)
    return {
        "benchmark": "adp",
        "date": time.strftime("%Y-%m-%d"),
        "solvent": solvent,
        "data": args.data,
        "data_frames": int(md.trajectory.n_frames),
        "proposal_data": args.proposal_data,
        "phi_positive_share": args.phi_positive_share,
        "flow": flow,
        "tails": gen.config.get("tails", "none"),
        "n_parameters": ts["n_parameters"],
        "epochs": ts["epochs_run"],
        "stop_reason": ts["stop_reason"],
        "best_val_nll": ts["best_val_nll"],
        "train_s": round(t_train, 1),
        "n_samples": ss["n_samples"],
        "ess": ss["ess"],
        "n_infinite_energy": ss["n_infinite_energy"],
        "df_phi_kT": fe["df_kT"],
        "df_phi_err_kT": fe["df_err_kT"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    from boltzgen.generator.workflow import json_safe

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--data",
        action="append",
        default=None,
        help="MD file (repeat to join several at one temperature); default data/adp-vacuum-300K.h5",
    )
    p.add_argument("--solvent", action="append", default=None)
    p.add_argument("--flow", action="append", default=None)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--layers", type=int, default=FLOW["n_layers"])
    p.add_argument("--hidden", type=int, nargs="+", default=list(FLOW["hidden"]))
    p.add_argument("--components", type=int, default=FLOW["n_components"])
    p.add_argument("--batch-size", type=int, default=TRAIN["batch_size"])
    p.add_argument("--lr", type=float, default=TRAIN["lr"])
    p.add_argument("--patience", type=int, default=30)
    p.add_argument(
        "--proposal-data",
        action="append",
        default=None,
        help="extra training frames from another ensemble (shape the proposal only)",
    )
    p.add_argument(
        "--phi-positive-share",
        type=float,
        default=None,
        help="weight the training frames so phi > 0 gets this share (e.g. 0.05)",
    )
    p.add_argument("--tails", default=FLOW["tails"], help="none or logistic (soft bounds)")
    p.add_argument(
        "--margin", type=float, default=FLOW["margin"], help="bounds margin (fraction of range)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/adp")
    p.add_argument(
        "--reweight-to",
        action="append",
        default=None,
        help="also reweight the trained flow to this solvent's energy (e.g. obc2)",
    )
    args = p.parse_args()
    args.data = args.data or ["data/adp-vacuum-300K.h5"]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*configurations invalid.*")
    for solvent in args.solvent or ["vacuum"]:
        for flow in args.flow or ["smooth", "spline"]:
            for res in run(args, flow, solvent):
                print(json.dumps(json_safe(res)), flush=True)


if __name__ == "__main__":
    main()
