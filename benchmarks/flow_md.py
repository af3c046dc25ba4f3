"""Flow as an MD potential: NVE energy conservation on U = -kT log q (Smooth-NF's test).

Smooth-NF reports a 5 ps NVE run at 1 fs staying within about +-5 kJ/mol, and an energy
fluctuation metric of 0.00787 for the flow vs 0.00590 for the Amber force field. Prints one JSON
object per model; the metric here is std(E_total) / std(E_potential).

    python benchmarks/flow_md.py runs/adp/vacuum-smooth/model.pt runs/adp/vacuum-spline/model.pt
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    import boltzgen as bg
    from boltzgen.generator.potential import flow_md

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("models", nargs="+")
    p.add_argument("--data", default="data/adp-vacuum-300K.h5")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--timestep", type=float, default=0.001, help="ps")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    x0 = bg.load_md(args.data).trajectory.xyz[0]
    for path in args.models:
        gen = bg.BoltzmannGenerator.load(path)
        t0 = time.perf_counter()
        try:
            traj = flow_md(
                gen,
                x0,
                n_steps=args.steps,
                timestep=args.timestep,
                report_interval=10,
                temperature=args.temperature,
                seed=args.seed,
            )
            res = {**traj.energy_drift(), "completed": True}
        except bg.InputError as exc:
            res = {"completed": False, "error": str(exc)}
        print(
            json.dumps(
                {
                    "benchmark": "flow_md_nve",
                    "date": time.strftime("%Y-%m-%d"),
                    "model": path,
                    "flow": gen.config["flow"],
                    "steps": args.steps,
                    "timestep_ps": args.timestep,
                    "temperature_K": args.temperature,
                    **res,
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
