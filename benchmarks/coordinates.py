"""Benchmark: internal-coordinate transform, forward and inverse per 1000 configurations.

Compares ``boltzgen.coordinates.InternalCoordinates`` (vectorised torch, level-by-level inverse)
with the plain per-atom NumPy loop in ``boltzgen.coordinates.reference`` in the same run.
One torch thread, float32 for boltzgen (the reference is float64 NumPy). Prints one JSON object
per line. Usage: ``python benchmarks/coordinates.py [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import torch

from boltzgen.coordinates import InternalCoordinates
from boltzgen.coordinates.reference import reference_forward, reference_inverse

DATA = Path(__file__).resolve().parents[1] / "data"


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"ms_median": float(np.median(ts)), "ms_min": float(np.min(ts)), "repeats": repeats}


def _configs(traj, n: int, seed: int = 0) -> torch.Tensor:
    ic = InternalCoordinates.from_topology(traj.topology, "keep").double()
    z, _ = ic(torch.tensor(traj.xyz[:1], dtype=torch.float64))
    z = z.repeat(n, 1)
    gen = torch.Generator().manual_seed(seed)
    z[:, ic.torsion_columns] += 0.3 * torch.randn(n, len(ic.torsion_columns), generator=gen)
    return ic.inverse(z)[0]


def bench_molecule(name: str, n: int, repeats: int, meta: dict) -> None:
    """Time one molecule and print JSON lines."""
    traj = md.load(DATA / f"{name}.pdb")
    x64 = _configs(traj, n)
    ic = InternalCoordinates.from_topology(traj.topology, "remove")
    x32 = x64.float()
    z32 = ic(x32)[0]
    zm = ic.zmatrix.numpy()
    xnp = x64.numpy()
    znp = z32.double().numpy()
    res = {}
    with torch.no_grad():
        res[("boltzgen", "forward")] = _time(lambda: ic(x32), repeats)
        res[("boltzgen", "inverse")] = _time(lambda: ic.inverse(z32), repeats)

    def fwd_bwd():
        xg = x32.clone().requires_grad_(True)
        z, ld = ic(xg)
        (z.sum() + ld.sum()).backward()

    def inv_bwd():
        zg = z32.clone().requires_grad_(True)
        x, ld = ic.inverse(zg)
        (x.sum() + ld.sum()).backward()

    res[("boltzgen", "forward+backward")] = _time(fwd_bwd, repeats)
    res[("boltzgen", "inverse+backward")] = _time(inv_bwd, repeats)
    ref_rep = max(3, repeats // 5)
    res[("numpy-per-atom-reference", "forward")] = _time(
        lambda: reference_forward(xnp, zm), ref_rep
    )
    res[("numpy-per-atom-reference", "inverse")] = _time(
        lambda: reference_inverse(znp, zm), ref_rep
    )
    for (impl, op), r in res.items():
        dtype = "float64" if impl.startswith("numpy") else "float32"
        print(
            json.dumps(
                {
                    "bench": "coordinates",
                    "molecule": name,
                    "n_atoms": traj.n_atoms,
                    "n_configs": n,
                    "impl": impl,
                    "op": op,
                    "dtype": dtype,
                    **r,
                    **meta,
                }
            )
        )
    for op in ("forward", "inverse"):
        ratio = (
            res[("numpy-per-atom-reference", op)]["ms_median"] / res[("boltzgen", op)]["ms_median"]
        )
        print(
            json.dumps(
                {
                    "bench": "coordinates",
                    "molecule": name,
                    "op": op,
                    "speedup_vs_reference": round(ratio, 2),
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    meta = {"torch": torch.__version__, "threads": 1, "cpu": platform.processor() or "cpu"}
    for name in ("alanine-dipeptide", "trp-cage"):
        bench_molecule(name, args.n, args.repeats, meta)


if __name__ == "__main__":
    main()
