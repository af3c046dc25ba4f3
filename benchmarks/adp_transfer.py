"""Transfer a trained flow to another solvent model by reverse-KL fine-tuning.

Starts from a saved generator (e.g. trained on vacuum REMD data), swaps its target energy to
``--solvent`` (e.g. obc2) and trains with ``weights = {"nll": w_nll, "kl": w_kl}``: the NLL term
on the original data keeps the flow's support, the KL term on the new energy moves it. Prints
ESS and dF(phi) before and after as JSON lines.

    python benchmarks/adp_transfer.py runs/remd-long/vacuum-smooth/model.pt --solvent obc2 \
        --data data/adp-vacuum-remd.h5 --minutes 15
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch


def main() -> None:
    import boltzgen as bg
    from boltzgen.generator.workflow import free_energy_report, json_safe, sample_to_files

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model")
    p.add_argument("--solvent", default="obc2")
    p.add_argument("--data", default="data/adp-vacuum-remd.h5")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--w-nll", type=float, default=1.0)
    p.add_argument("--w-kl", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--kl-batch", type=int, default=256)
    p.add_argument("--samples", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/transfer")
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*configurations invalid.*")
    md = bg.load_md(args.data)
    base = bg.BoltzmannGenerator.load(args.model)
    system = bg.System.from_spec({**base.system.to_spec(), "solvent": args.solvent})
    gen = bg.BoltzmannGenerator.load(args.model, system)
    gen.energy = bg.EnergyModel(system, platform=bg.energy.fastest_platform(system))

    def report(stage: str, train_s: float) -> None:
        out = f"{args.out}/{stage}"
        s, ss = sample_to_files(gen, args.samples, out, seed=args.seed)
        fe = free_energy_report(s, system, out, cv="phi", seed=args.seed)
        row = {
            "benchmark": "adp_transfer",
            "date": time.strftime("%Y-%m-%d"),
            "stage": stage,
            "target_solvent": args.solvent,
            "train_s": round(train_s, 1),
            "ess": ss["ess"],
            "df_phi_kT": fe["df_kT"],
            "df_phi_err_kT": fe["df_err_kT"],
            "val_nll_data": gen.history.get("val_nll", [math.nan])[-1],
        }
        print(json.dumps(json_safe(row)), flush=True)

    report("before", 0.0)
    t0 = time.perf_counter()
    gen.fit(
        md,
        loss="mixed",
        weights={"nll": args.w_nll, "kl": args.w_kl},
        epochs=10_000,
        lr=args.lr,
        kl_batch_size=args.kl_batch,
        time_limit=60 * args.minutes,
        patience=10_000,
        seed=args.seed,
    )
    report("after", time.perf_counter() - t0)
    gen.save(f"{args.out}/model.pt")


if __name__ == "__main__":
    main()
