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
[--repeats 3] [--flow smooth] [--pdb data/peptides/ace-ala5-nme.pdb] [--size rule]``.

``--compare REV`` instead times this checkout's flows against ``boltzgen/flows`` as of git
revision ``REV`` (loaded from git into a private package), side by side in one process: the
same architecture, seed and weights, one thread, CPU-time medians of alternating repeats, for
a likelihood step (forward + backward) and for sampling (the inverse); each row also gives the
largest differences in log q, in the inverse and in the parameter gradients (old vs new).
``--torch-profile`` prints torch.profiler's operator table of one likelihood step instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import boltzgen as bg
from boltzgen.flows import MLPConditioner, build_flow
from boltzgen.generator.config import flow_size
from boltzgen.generator.data import as_training_data
from boltzgen.paths import data_file

ROOT = Path(__file__).resolve().parents[1]


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


def baseline_flows(rev: str):
    """``boltzgen/flows`` as of git revision ``rev``, imported as the package
    ``_baseline_flows`` (its absolute imports rewritten), for side-by-side timing."""
    git = ["git", "-C", str(ROOT)]
    files = subprocess.run(
        [*git, "ls-tree", "--name-only", rev, "boltzgen/flows/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pkg = Path(tempfile.mkdtemp(prefix="baseline_")) / "_baseline_flows"
    pkg.mkdir()
    for f in files:
        src = subprocess.run([*git, "show", f"{rev}:{f}"], capture_output=True, text=True).stdout
        (pkg / Path(f).name).write_text(src.replace("boltzgen.flows", "_baseline_flows"))
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("_baseline_flows")


def _cpu_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds of each function, the functions alternating (so load drifts hit
    both alike); one warm-up call each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[k].append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(gen, rev: str, kind: str, batch: int, repeats: int) -> dict[str, object]:
    """Old (``rev``) vs this checkout's flow: CPU seconds and the largest differences."""
    old_pkg = baseline_flows(rev) if isinstance(rev, str) else rev
    cfg = gen.flow_config
    kw = dict(kind=kind, n_layers=cfg.n_layers, hidden=cfg.hidden, base=cfg.base)
    torch.manual_seed(0)
    new = build_flow(gen.dim, gen.coords.circular, **kw)
    with torch.no_grad():  # away from the identity map (zero-initialised last layers)
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
    old = old_pkg.build_flow(gen.dim, gen.coords.circular, **kw)
    old.load_state_dict(new.state_dict())
    with torch.no_grad():
        u, _ = new.sample(batch)

    def nll(flow) -> Callable[[], None]:
        def step() -> None:
            flow.zero_grad(set_to_none=True)
            (-flow.log_prob(u).mean()).backward()

        return step

    def draw(flow) -> Callable[[], object]:
        def sample() -> object:
            torch.manual_seed(1)
            with torch.no_grad():
                return flow.sample(batch)

        return sample

    step = _cpu_medians({"old": nll(old), "new": nll(new)}, repeats)
    samp = _cpu_medians({"old": draw(old), "new": draw(new)}, repeats)
    go = torch.cat([p.grad.flatten() for p in old.parameters()])
    gn = torch.cat([p.grad.flatten() for p in new.parameters()])
    (yo, lo), (yn, ln) = draw(old)(), draw(new)()
    with torch.no_grad():
        dlq = (old.log_prob(u) - new.log_prob(u)).abs().max().item()
    return {
        "flow": kind,
        "batch": batch,
        "nll_step_old_s": step["old"],
        "nll_step_new_s": step["new"],
        "nll_speedup": step["old"] / step["new"],
        "sample_old_s": samp["old"],
        "sample_new_s": samp["new"],
        "sample_speedup": samp["old"] / samp["new"],
        "max_abs_dlogq": dlq,
        "max_abs_dinverse": (yo - yn).abs().max().item(),
        "max_abs_dlogq_sample": (lo - ln).abs().max().item(),
        "max_rel_dgrad": ((go - gn).abs().max() / go.abs().max()).item(),
    }


def torch_profile(gen, batch: int, rows: int = 25) -> str:
    """torch.profiler's operator table (by self CPU time) of one likelihood step."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        u, _ = gen.flow.sample(batch)

    def step() -> None:
        gen.zero_grad(set_to_none=True)
        (-gen.flow.log_prob(u).mean()).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="256,1024,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flow", default="smooth", choices=["smooth", "spline"])
    ap.add_argument("--pdb", default=None, help="molecule (default: alanine dipeptide + data)")
    ap.add_argument("--size", default="default", choices=["default", "rule"])
    ap.add_argument("--compare", default=None, metavar="REV")
    ap.add_argument("--torch-profile", action="store_true")
    args = ap.parse_args()

    if args.pdb is not None:  # no shipped data: the bounds come from the force field
        system = bg.System.from_pdb(args.pdb)
        td, x_all, load_s = None, None, 0.0
    else:
        system = bg.System.alanine_dipeptide()
        t0 = time.perf_counter()
        td = as_training_data(bg.load_md(data_file("adp-vacuum-remd.h5")), system.n_atoms)
        x_all = td.tensors(torch.float32)[0]
        load_s = time.perf_counter() - t0
    size = {}
    if args.size == "rule":
        rule = flow_size(3 * system.n_atoms - 6)
        size = {"n_layers": rule["n_layers"], "hidden": rule["hidden"]}
    gen = bg.BoltzmannGenerator.build(system, flow=args.flow, data=td, **size)
    name = "alanine dipeptide (vacuum)" if args.pdb is None else Path(args.pdb).stem
    if args.compare or args.torch_profile:
        torch.set_num_threads(1)
        old_pkg = baseline_flows(args.compare) if args.compare else None
        for batch in (int(b) for b in args.batches.split(",")):
            if args.torch_profile:
                print(torch_profile(gen, batch), flush=True)
                continue
            row = compare(gen, old_pkg, args.flow, batch, args.repeats)
            extra = {"molecule": name, "dim": gen.dim, "rev": args.compare, "threads": 1}
            extra |= {"n_layers": gen.config["n_layers"], "hidden": gen.config["hidden"]}
            extra |= {"repeats": args.repeats, "load_avg_1m": os.getloadavg()[0]}
            print(json.dumps({**extra, **row}), flush=True)
        return
    if x_all is None:
        raise SystemExit("the full profile needs data: run it on alanine dipeptide")
    gen.energy  # noqa: B018 - choose the OpenMM platform (a timed probe) before profiling
    n_params = sum(p.numel() for p in gen.parameters())
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for batch in (int(b) for b in args.batches.split(",")):
            res = profile(gen, x_all, batch, args.repeats)
            record = {
                "molecule": name,
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
