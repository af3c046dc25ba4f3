"""Profile: where a training step's time goes, on alanine dipeptide (issue 11).

For each torch thread count and batch size, times (median over ``--repeats``, seconds):

* ``data_load_s``      : reading ``data/adp-vacuum-remd.h5`` into training tensors (once);
* ``data_batch``       : one minibatch gather from the training tensors;
* ``ic_forward``       : Cartesian -> internal coordinates -> unit box (``gen.coords``);
* ``flow_forward``     : ``flow.log_prob`` of the batch (the density direction);
* ``conditioners``     : the part of ``flow_forward`` spent inside the conditioner MLPs
  (forward hooks; included in ``flow_forward``);
* ``flow_backward``    : backward of the NLL through the flow;
* ``nll_step``         : a whole likelihood step (gather, log_prob, backward, Adam);
* ``flow_sample``      : base draws -> flow inverse (root finding for the smooth flow);
* ``ic_inverse``       : unit box -> Cartesian positions (sampling direction);
* ``energy``           : the OpenMM energy bridge, reduced energies of the batch (what the
  'anneal' loss needs per draw);
* ``energy_forces``    : energies and forces (what reverse KL needs per draw).

Prints one JSON object per (threads, batch). OpenMM's own threads are not set here (its CPU
platform picks its own); the energy rows are per call through :class:`EnergyModel`.
Usage: ``python benchmarks/profile_training.py [--batches 256,1024,4096] [--threads 1,2]
[--repeats 3] [--flow smooth]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch

import boltzgen as bg
from boltzgen.flows import MLPConditioner
from boltzgen.generator.data import as_training_data
from boltzgen.paths import data_file


def _median(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, lazy contexts)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


class _HookTimer:
    """Accumulated wall time inside every conditioner's forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.total, self._t0 = 0.0, 0.0
        for m in model.modules():
            if isinstance(m, MLPConditioner):
                m.register_forward_pre_hook(self._pre)
                m.register_forward_hook(self._post)

    def _pre(self, *_: object) -> None:
        self._t0 = time.perf_counter()

    def _post(self, *_: object) -> None:
        self.total += time.perf_counter() - self._t0


def profile(gen, x_all: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4)
    hooks = _HookTimer(gen.flow)
    gen_b = torch.Generator().manual_seed(0)

    def gather() -> torch.Tensor:
        return x_all[torch.randint(len(x_all), (batch,), generator=gen_b)]

    xb = gather()
    with torch.no_grad():
        u, _ = gen.coords(xb)
    out: dict[str, float] = {"data_batch": _median(gather, repeats)}
    out["ic_forward"] = _median(lambda: gen.coords(xb), repeats)
    hooks.total = 0.0
    out["flow_forward"] = _median(lambda: gen.flow.log_prob(u), repeats)
    out["conditioners"] = hooks.total / (repeats + 1)  # hooks also saw the warm-up call

    def backward() -> None:
        gen.zero_grad()
        lq = gen.flow.log_prob(u)
        t0 = time.perf_counter()
        (-lq.mean()).backward()
        backward.last = time.perf_counter() - t0

    times = []
    for _ in range(repeats + 1):
        backward()
        times.append(backward.last)
    out["flow_backward"] = statistics.median(times[1:])

    def step() -> None:
        x = gather()
        loss = -gen.log_prob(x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out["nll_step"] = _median(step, repeats)
    with torch.no_grad():
        out["flow_sample"] = _median(lambda: gen.flow.sample(batch), repeats)
        us, _ = gen.flow.sample(batch)
        out["ic_inverse"] = _median(lambda: gen.coords.inverse(us), repeats)
        xs = xb.double()  # data frames: a trained flow's draws are valid, an untrained one's not
        out["energy"] = _median(lambda: gen.energy(xs), repeats)
        out["energy_forces"] = _median(lambda: gen.energy.energy_and_forces(xs), repeats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="256,1024,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flow", default="smooth", choices=["smooth", "spline"])
    args = ap.parse_args()

    system = bg.System.alanine_dipeptide()
    t0 = time.perf_counter()
    td = as_training_data(bg.load_md(data_file("adp-vacuum-remd.h5")), system.n_atoms)
    x_all = td.tensors(torch.float32)[0]
    load_s = time.perf_counter() - t0
    gen = bg.BoltzmannGenerator.build(system, flow=args.flow, data=td)
    gen.energy  # noqa: B018 - choose the OpenMM platform (a timed probe) before profiling
    n_params = sum(p.numel() for p in gen.parameters())
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for batch in (int(b) for b in args.batches.split(",")):
            res = profile(gen, x_all, batch, args.repeats)
            record = {
                "molecule": "alanine dipeptide (vacuum)",
                "flow": args.flow,
                "flow_config": {k: gen.config[k] for k in ("n_layers", "hidden", "dtype")},
                "n_parameters": n_params,
                "dim": gen.dim,
                "threads": threads,
                "batch": batch,
                "repeats": args.repeats,
                "data_load_s": load_s,
                "n_frames": len(td),
                "energy_platform": gen.energy.platform,
                **{f"{k}_s": v for k, v in res.items()},
                "nll_samples_per_s": batch / res["nll_step"],
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
