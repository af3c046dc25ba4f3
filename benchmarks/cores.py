"""Wall time at 1 and 2 cores: the REMD data stage and a short `boltzgen run`, side by side.

Two parts, one JSON object per result on stdout; the 1- and 2-core runs alternate (1, 2, 1, 2,
...) so that the load other processes put on the machine falls on both alike, and every row
states the load average (``/proc/loadavg``) before it.

* ``remd``: :func:`boltzgen.enhanced.replica_exchange` on the pipeline's own ladder
  (:func:`boltzgen.remd_ladder.temperature_ladder`) for a fixed number of steps per replica,
  with ``n_workers`` = 1 and 2 (what ``--cores 1`` / ``--cores 2`` give the data stage), worker
  start-up included. A summary row per molecule: median wall times, the speed-up, and a
  projection to 16 cores **on paper**: the two medians fix a serial part s and a replica part
  P of T(k) = s + P ceil(R/k)/R (R replicas, at most one process each), so T(16) = s + P/R
  (Amdahl's law with the replicas' granularity); the plain Amdahl fraction p from the
  speed-up is printed too. Linux shares the CPU between sessions (``sched_autogroup``), so
  on a machine others keep busy a second process of ours gets no more CPU, only waits; the
  rows therefore also give each process's CPU seconds, and the busier process's CPU time
  (the critical path) stands in for the wall time on an idle machine: the summary's
  ``idle_machine`` projection comes from those, an estimate that leaves out the exchange
  round-trip latency (tens of microseconds per exchange when a core is free).

* ``run``: ``python -m boltzgen run PDB --budget B --cores k --quiet`` in a subprocess. The
  budget fixes the wall time, so the row reports the work done in it (REMD ns, training
  epochs, flow samples, refinement energy evaluations, effective samples n_eff) and the CPU
  seconds used (the child's rusage), at 1 and 2 cores.

    PYTHONPATH=. .venv/bin/python benchmarks/cores.py remd --steps 40000 --rounds 2 \\
        data/alanine-dipeptide.pdb data/peptides/ace-ser-ser-nme.pdb
    PYTHONPATH=. .venv/bin/python benchmarks/cores.py run --budget 60s --rounds 2

* ``torch``: training steps of the pipeline's ADP flow (8 layers x [64, 64], NLL + Adam,
  batch 256) at 1 and 2 torch threads; ``energy``: energies + forces per frame (ADP,
  Reference) with 1 and 2 evaluators at batches of 64, 512 and 4096.

    PYTHONPATH=. .venv/bin/python benchmarks/cores.py torch --rounds 3

* ``flows``: seconds per training step of that flow alone, and of each of two such flows
  training at the same time in two processes (the pipeline's independent flows side by side).

    PYTHONPATH=. .venv/bin/python benchmarks/cores.py flows --rounds 3 --seconds 20
    PYTHONPATH=. .venv/bin/python benchmarks/cores.py energy --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its reaped children, so far."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def projection(t1: float, t2: float, n_replicas: int, cores: int = 16) -> dict:
    """T(k) = s + P ceil(R/k)/R fitted to T(1), T(2); T(cores) from it; Amdahl's p too."""
    g2 = math.ceil(n_replicas / 2) / n_replicas
    par = (t1 - t2) / (1.0 - g2)  # P
    ser = t1 - par  # s
    gk = math.ceil(n_replicas / cores) / n_replicas
    speedup = t1 / t2
    p = 2.0 * (1.0 - 1.0 / speedup)  # Amdahl: S(2) = 1 / ((1 - p) + p / 2)
    return {
        "serial_part_s": ser,
        "replica_part_s": par,
        f"projected_wall_s_at_{cores}_cores": ser + par * gk,
        f"processes_used_at_{cores}_cores": min(cores, n_replicas),
        "amdahl_parallel_fraction": p,
        f"amdahl_projected_wall_s_at_{cores}_cores": t1 * ((1 - p) + p / cores),
        "note": "projection on paper from the 1- and 2-core medians, not a measurement",
    }


def bench_remd(pdbs: list[str], solvent: str, steps: int, rounds: int) -> None:
    from boltzgen.enhanced import replica_exchange
    from boltzgen.remd_ladder import temperature_ladder
    from boltzgen.simulation import LangevinConfig
    from boltzgen.systems import System

    for pdb in pdbs:
        system = System.from_pdb(pdb, solvent=solvent)
        temps, _ = temperature_ladder(system)
        walls: dict[int, list[float]] = {1: [], 2: []}
        critical: dict[int, list[float]] = {1: [], 2: []}
        for rnd in range(rounds):
            for k in (1, 2):
                load = loadavg()
                (p0, w0), t0 = cpu_seconds(), time.perf_counter()
                r = replica_exchange(
                    system,
                    temps,
                    n_steps=steps,
                    exchange_interval=100,
                    report_interval=500,
                    n_equilibration=0,
                    langevin=LangevinConfig(seed=rnd, threads=1),
                    n_workers=k,
                )
                wall = time.perf_counter() - t0
                p1, w1 = cpu_seconds()
                walls[k].append(wall)
                # the busier process's CPU time: the wall time where nothing else competes
                critical[k].append(max(p1 - p0, w1 - w0))
                emit(
                    {
                        "part": "remd",
                        "molecule": Path(pdb).name,
                        "solvent": solvent,
                        "n_atoms": system.n_atoms,
                        "n_replicas": len(temps),
                        "platform": r.settings["platform"],
                        "cores": k,
                        "round": rnd,
                        "steps_per_replica": steps,
                        "wall_s": wall,
                        "cpu_s": (p1 - p0) + (w1 - w0),
                        "cpu_s_this_process": p1 - p0,
                        "cpu_s_worker": w1 - w0,
                        "replica_steps_per_s": len(temps) * steps / wall,
                        "loadavg_before": load,
                        "loadavg_after": loadavg(),
                    }
                )
        t1, t2 = statistics.median(walls[1]), statistics.median(walls[2])
        c1, c2 = statistics.median(critical[1]), statistics.median(critical[2])
        emit(
            {
                "part": "remd-summary",
                "molecule": Path(pdb).name,
                "solvent": solvent,
                "n_replicas": len(temps),
                "median_wall_s": {"1": t1, "2": t2},
                "speedup_2_cores": t1 / t2,
                "ideal_speedup_2_cores": len(temps) / math.ceil(len(temps) / 2),
                **projection(t1, t2, len(temps)),
                "critical_path_cpu_s": {"1": c1, "2": c2},
                "speedup_2_cores_on_an_idle_machine_estimated": c1 / c2,
                "idle_machine": projection(c1, c2, len(temps)),
                "loadavg_now": loadavg(),
            }
        )


def bench_run(pdb: str, budget: str, rounds: int, extra: list[str]) -> None:
    rows: dict[int, list[dict]] = {1: [], 2: []}
    for rnd in range(rounds):
        for k in (1, 2):
            with tempfile.TemporaryDirectory(prefix="cores-bench-") as tmp:
                out = Path(tmp) / "run"
                cmd = [sys.executable, "-m", "boltzgen", "run", pdb, "--out", str(out)]
                cmd += ["--budget", budget, "--cores", str(k), "--quiet", "--seed", str(rnd)]
                load = loadavg()
                kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                proc = subprocess.run(cmd + extra, capture_output=True, text=True, env=os.environ)
                wall = time.perf_counter() - t0
                kids = resource.getrusage(resource.RUSAGE_CHILDREN)
                if proc.returncode != 0:
                    emit({"part": "run", "cores": k, "error": proc.stderr[-2000:]})
                    continue
                s = json.loads((out / "summary.json").read_text())
            data, flows = s["data"], s.get("flows", [])
            row = {
                "part": "run",
                "molecule": Path(pdb).name,
                "budget": budget,
                "cores": k,
                "round": rnd,
                "wall_s": wall,
                "cpu_s": (kids.ru_utime - kids0.ru_utime) + (kids.ru_stime - kids0.ru_stime),
                "stage_wall_s": s["wall_time_s"],
                "remd_ns_per_replica": data.get("simulated_ns_per_replica"),
                "remd_replica_processes": data.get("replica_processes"),
                "epochs": [f.get("epochs_run") for f in flows],
                "flow_samples": [f.get("n_samples") for f in flows],
                "refine_energy_evals": [f.get("n_energy_evals") for f in flows],
                "ess": s["ess"],
                "n_eff": s["n_eff"],
                "df_phi2_kT": s["free_energies"].get("phi:2", {}).get("df_kT"),
                "loadavg_before": load,
                "loadavg_after": loadavg(),
            }
            rows[k].append(row)
            emit(row)
    med = {
        str(k): {
            key: statistics.median(r[key] for r in rows[k])
            for key in ("wall_s", "cpu_s", "remd_ns_per_replica")
        }
        for k in (1, 2)
        if rows[k]
    }
    emit({"part": "run-summary", "budget": budget, "medians": med, "loadavg_now": loadavg()})


def _adp_flow_step():
    """One training step (NLL + Adam, batch 256) of the pipeline's ADP flow, as a callable."""
    import numpy as np
    import torch

    from boltzgen.generator.config import FlowConfig
    from boltzgen.generator.data import TrainingData
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.md import load_md
    from boltzgen.systems import System

    x = np.asarray(load_md(ROOT / "data" / "adp-vacuum-remd.h5").trajectory.xyz[:2000])
    arch = FlowConfig(flow="smooth", n_layers=8, hidden=(64, 64), seed=0)
    gen = BoltzmannGenerator.build(
        System.alanine_dipeptide(), data=TrainingData(x, None, None), config=arch
    )
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4)
    xb = torch.as_tensor(x[:256], dtype=torch.float32)

    def step() -> None:
        opt.zero_grad()
        (-gen.log_prob(xb).mean()).backward()
        opt.step()

    return step


def _seconds_per_step(step, seconds: float) -> float:
    step()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return (time.perf_counter() - t0) / n


def bench_torch(rounds: int, seconds: float) -> None:
    """Training steps (NLL + Adam, batch 256) of the pipeline's ADP flow at 1 and 2 threads."""
    import torch

    step = _adp_flow_step()
    per_step: dict[int, list[float]] = {1: [], 2: []}
    for rnd in range(rounds):
        for k in (1, 2):
            torch.set_num_threads(k)
            per_step[k].append(_seconds_per_step(step, seconds))
            emit({"part": "torch", "threads": k, "round": rnd, "s_per_step": per_step[k][-1],
                  "loadavg": loadavg()})  # fmt: skip
    emit({"part": "torch-summary", "median_s_per_step": {
        k: statistics.median(v) for k, v in per_step.items()}})  # fmt: skip


def _flow_worker(seconds: float, conn) -> None:
    import torch

    torch.set_num_threads(1)
    step = _adp_flow_step()
    conn.recv()  # start together
    conn.send(_seconds_per_step(step, seconds))


def bench_flows(rounds: int, seconds: float) -> None:
    """Independent flows side by side (what ``boltzgen run`` does with >= 2 cores): seconds per
    training step of one flow alone (one process, one thread) against each of two flows
    training at the same time in two processes. Throughput per flow kept = alone / side."""
    import multiprocessing as mp

    import torch

    torch.set_num_threads(1)
    step = _adp_flow_step()
    ctx = mp.get_context("spawn")
    alone, side = [], []
    for rnd in range(rounds):
        alone.append(_seconds_per_step(step, seconds))
        pipes = [ctx.Pipe() for _ in range(2)]
        procs = [ctx.Process(target=_flow_worker, args=(seconds, b)) for _, b in pipes]
        for p in procs:
            p.start()
        for a, _ in pipes:
            a.send("go")
        pair = [a.recv() for a, _ in pipes]
        for p in procs:
            p.join()
        side.append(max(pair))
        emit({"part": "flows", "round": rnd, "alone_s_per_step": alone[-1],
              "side_by_side_s_per_step": pair, "loadavg": loadavg()})  # fmt: skip
    a, b = statistics.median(alone), statistics.median(side)
    emit({"part": "flows-summary", "median_alone_s_per_step": a,
          "median_side_by_side_s_per_step": b, "per_flow_throughput_kept": a / b,
          "two_flow_throughput_vs_one_after_the_other": 2 * a / b})  # fmt: skip


def bench_energy(rounds: int, seconds: float) -> None:
    """Energies + forces of ADP (Reference) per frame with 1 and 2 evaluators."""
    import numpy as np
    import torch

    from boltzgen.energy import EnergyModel
    from boltzgen.md import load_md
    from boltzgen.systems import System

    system = System.alanine_dipeptide()
    xyz = load_md(ROOT / "data" / "adp-vacuum-remd.h5").trajectory.xyz[:4096]
    x = torch.as_tensor(np.asarray(xyz, dtype=np.float64))
    models = {k: EnergyModel(system, platform="Reference", n_workers=k) for k in (1, 2)}
    for m in models.values():
        m(x[:8])  # workers up
    for batch in (64, 512, 4096):
        us: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for k, model in models.items():
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < seconds:
                    model.energy_and_forces(x[:batch])
                    n += 1
                us[k].append((time.perf_counter() - t0) / n / batch * 1e6)
        emit({"part": "energy", "batch": batch, "loadavg": loadavg(),
              "us_per_frame_median": {k: statistics.median(v) for k, v in us.items()}})  # fmt: skip
    for m in models.values():
        m.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    r = sub.add_parser("remd")
    r.add_argument("pdbs", nargs="*", default=[str(ROOT / "data" / "alanine-dipeptide.pdb")])
    r.add_argument("--solvent", default="vacuum")
    r.add_argument("--steps", type=int, default=40_000)
    r.add_argument("--rounds", type=int, default=2)
    u = sub.add_parser("run")
    u.add_argument("pdb", nargs="?", default=str(ROOT / "data" / "alanine-dipeptide.pdb"))
    u.add_argument("--budget", default="60s")
    u.add_argument("--rounds", type=int, default=2)
    u.add_argument("extra", nargs="*", help="further `boltzgen run` options (after --)")
    for name in ("torch", "energy", "flows"):
        p = sub.add_parser(name)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--seconds", type=float, default=1.5 if name == "energy" else 4.0)
    args = ap.parse_args()
    emit({"part": "machine", "cores": len(os.sched_getaffinity(0)), "loadavg": loadavg()})
    if args.part == "remd":
        bench_remd(args.pdbs, args.solvent, args.steps, args.rounds)
    elif args.part == "run":
        bench_run(args.pdb, args.budget, args.rounds, args.extra)
    elif args.part == "torch":
        bench_torch(args.rounds, args.seconds)
    elif args.part == "flows":
        bench_flows(args.rounds, args.seconds)
    else:
        bench_energy(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
