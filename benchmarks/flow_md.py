"""Flow as an MD potential: NVE energy conservation on U = -kT log q (Smooth-NF's test).

Smooth-NF reports a 5 ps NVE run at 1 fs staying within about +-5 kJ/mol, and an energy
fluctuation metric of 0.00787 for the flow vs 0.00590 for the Amber force field. Prints one JSON
object per (model, start frame); the metric here is std(E_total) / std(E_potential). A run that
leaves the model's support (log q = -inf, only possible with hard box bounds) is reported with
the step it reached.

    python benchmarks/flow_md.py runs/adp/vacuum-smooth/model.pt --starts 0 5000 10000

Without model paths it first trains one (NLL, then NLL + force matching) and saves it:

    python benchmarks/flow_md.py --tails logistic --nll-minutes 6 --force-minutes 4 \
        --starts 0 5000 10000 15000 20000
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from boltzgen.generator.config import FlowConfig


def train(args) -> str:
    """Train the model the NVE test runs on; returns its path."""
    import boltzgen as bg

    md = bg.load_md(args.data)
    gen = bg.BoltzmannGenerator.build(
        md.system(),
        data=md,
        n_layers=args.layers,
        tails=args.tails,
        margin=args.margin,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    common = {"epochs": 10_000, "patience": 30, "seed": args.seed}
    hist = gen.fit(md, loss="nll", time_limit=60 * args.nll_minutes, **common)
    if args.force_minutes > 0:
        hist = gen.fit(
            md,
            loss="mixed",
            weights={"nll": 1.0, "force": args.force_weight},
            lr=3e-4,
            time_limit=60 * args.force_minutes,
            **common,
        )
    path = f"{args.out}/flow-md-{args.tails}-m{args.margin}-s{args.seed}.pt"
    gen.save(path)
    val = hist.get("val_nll") or [float("nan")]
    print(
        json.dumps(
            {
                "benchmark": "flow_md_train",
                "model": path,
                "tails": args.tails,
                "margin": args.margin,
                "layers": args.layers,
                "last_val_nll": val[-1],
                "train_s": round(time.perf_counter() - t0, 1),
            }
        ),
        flush=True,
    )
    return path


def main() -> None:
    import boltzgen as bg
    from boltzgen.errors import FlowMDError
    from boltzgen.generator.flow_md import flow_md

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", nargs="*")
    p.add_argument("--data", default="data/adp-vacuum-300K.h5")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--timestep", type=float, default=0.001, help="ps")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--starts", type=int, nargs="+", default=[0], help="start frames of --data")
    p.add_argument("--tails", default="logistic", help="when training: none or logistic")
    p.add_argument("--margin", type=float, default=0.1, help="when training: bounds margin")
    p.add_argument("--layers", type=int, default=FlowConfig().n_layers)
    p.add_argument("--nll-minutes", type=float, default=6.0)
    p.add_argument("--force-minutes", type=float, default=4.0)
    p.add_argument("--force-weight", type=float, default=1e-4)
    p.add_argument("--out", default="runs/flow_md")
    args = p.parse_args()
    torch.set_num_threads(1)
    xyz = bg.load_md(args.data).trajectory.xyz
    for path in args.models or [train(args)]:
        gen = bg.BoltzmannGenerator.load(path)
        for start in args.starts:
            t0 = time.perf_counter()
            try:
                traj = flow_md(
                    gen,
                    xyz[start],
                    n_steps=args.steps,
                    timestep=args.timestep,
                    report_interval=10,
                    temperature=args.temperature,
                    seed=args.seed + start,
                )
                res = {**traj.energy_drift(), "completed": True, "steps_done": args.steps}
            except FlowMDError as exc:
                res = {"completed": False, "steps_done": exc.step, "error": str(exc)}
            row = {
                "benchmark": "flow_md_nve",
                "date": time.strftime("%Y-%m-%d"),
                "model": path,
                "flow": gen.config["flow"],
                "tails": gen.config.get("tails", "none"),
                "start_frame": start,
                "steps": args.steps,
                "timestep_ps": args.timestep,
                "temperature_K": args.temperature,
                **res,
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
