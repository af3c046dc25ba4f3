"""Coarse-graining benchmark: flow matching on N frames vs classical force matching on M frames.

Each run maps an evenly strided subset of the training data onto the backbone beads, trains
(flow matching: teacher flow + teacher forces; force matching: mapped all-atom forces),
simulates the CG force field and scores the phi/psi distribution against a reference (all
frames of ``--reference``). Prints one JSON object per run.

    .venv/bin/python benchmarks/cg.py --runs flow:2000 forces:2000 forces:20000 \
        --data data/adp-vacuum-remd.h5 --reference data/adp-vacuum-remd.h5

Budgets are set by the options (defaults are small: minutes on 2 cores, not the paper's
100 x 250k steps). A run whose CG MD blows up prints its error and the step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boltzgen import cg  # noqa: E402
from boltzgen.md import load_md  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", default=["flow:2000", "forces:2000"])
    p.add_argument("--data", default=str(ROOT / "data" / "adp-vacuum-remd.h5"))
    p.add_argument("--reference", default=None, help="MD file (default: --data)")
    p.add_argument("--teacher-epochs", type=int, default=100)
    p.add_argument("--teacher-steps", type=int, default=2000, help="0: use --teacher-epochs")
    p.add_argument("--teacher-samples", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--student-steps", type=int, default=5000, help="0: use --epochs")
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 128, 128])
    p.add_argument("--walkers", type=int, default=100)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--timestep", type=float, default=0.002)
    p.add_argument("--discard", type=int, default=20, help="frames per walker not scored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for run outputs (default: temp)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_md(args.data)
    ref = data if args.reference in (None, args.data) else load_md(args.reference)
    mapping = cg.Mapping.backbone(data.system())
    ref_d = mapping.cg_system().dihedrals(mapping.map_positions(ref.trajectory.xyz))[:, :2]
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cg-bench-"))
    for spec in args.runs:
        method, n = spec.split(":")
        config = {
            "method": method,
            "max_frames": int(n),
            "teacher_epochs": args.teacher_epochs,
            "teacher_steps": args.teacher_steps or None,
            "steps": args.student_steps or None,
            "n_teacher_samples": args.teacher_samples,
            "epochs": args.epochs,
            "hidden": args.hidden,
            "n_walkers": args.walkers,
            "n_steps": args.steps,
            "timestep": args.timestep,
            "discard_frames": args.discard,
            "seed": args.seed,
        }
        t0 = time.perf_counter()
        row = {"run": spec, "data": args.data, "reference": args.reference or args.data}
        try:
            s = cg.run_pipeline(
                data, mapping, out_root / spec.replace(":", "_"), config, reference=ref_d
            )
        except cg.CGMDError as exc:
            row.update(error=str(exc), step=exc.step, time_s=time.perf_counter() - t0)
            print(json.dumps(row), flush=True)
            continue
        row.update(
            n_frames=s["n_frames"],
            n_force_samples=s["n_force_samples"],
            metrics=s["metrics"],
            teacher=s.get("teacher"),
            student=s["student"],
            md=s["md"],
            time_s=s["time_s"],
            out=str(out_root / spec.replace(":", "_")),
            config=config,
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
