"""Flow quality per compute (issue 21): flow-only Kish ESS against core-seconds and energy
evaluations, data included, beside the CMT paper's table.

Each point is one molecule, one budget and one seed, done the way ``boltzgen run`` does its
data and training stages, with the library's current defaults:

1. data: temperature replica exchange on the ladder from the molecule's size
   (:func:`~boltzgen.remd_ladder.temperature_ladder`), steps calibrated to fill
   ``data_share`` of the budget (1 fs, one OpenMM thread per replica), the 300 K replica's
   frames;
2. training: frames balanced over the backbone sign patterns as the pipeline does
   (:func:`~boltzgen.pipeline.training.balanced_data`), the flow from the size rule
   (:func:`~boltzgen.generator.config.flow_size`, smooth), maximum likelihood with the
   pipeline's settings (:func:`~boltzgen.pipeline.training.likelihood_config`: batch 256,
   lr 5e-4, plateau schedule, patience 50, then the finish: the last quarter from the best
   weights on every frame, the rate from lr / 5 to 0) until the rest of the budget is spent
   (:func:`~boltzgen.generator.workflow.train_model`); ``--finish 0`` for the plateau alone;
3. evaluation (not counted in the budget): ``--draws`` fresh flow draws, Kish ESS of their
   importance weights exp(-u - log q), no refinement, no clipping; beside it the weights'
   Pareto k-hat (above ``k_hat_threshold`` the ESS of this many draws is not to be trusted:
   a heavy tail, RESULTS.md 2026-12-05, where one flow's 53 % at 20,000 draws was 7 % at
   100,000).

With ``--flows K`` (and ``--cores K``), flows 2..K (seeds + 1000 (k - 1)) train on the same
frames in worker processes at the same time as flow 1, so no core idles during training; the
row then also gives each flow's ESS and that of their equal-weight mixture
(:class:`~boltzgen.generator.mixture.FlowMixture`: ``--draws`` in all, every draw weighted
against the whole mixture).

The budget is wall-clock seconds (the stages size themselves by wall time, as in ``boltzgen
run``); the x-axes are measured: core-seconds = CPU time of this process and its children
(data + training), energy evaluations = replicas x MD steps (calibration included). On a
shared machine the core-seconds of a point are below its wall budget. One torch thread.

Prints one JSON object per point (and the CMT table, once). Usage::

    nice -n 10 python benchmarks/flow_quality.py --molecules adp --minutes 5,15 --seeds 0,1
    python benchmarks/flow_quality.py --molecules adp,ala5,trp --minutes 60 --seeds 0,1  # targets
    # both cores busy in training too: two flows side by side, and their mixture
    python benchmarks/flow_quality.py --molecules adp --minutes 60 --seeds 0 --cores 2 --flows 2
    # flows trained earlier, evaluated again (more draws, other seeds): ESS and k-hat
    python benchmarks/flow_quality.py --molecules adp --seeds 7 --draws 100000 \
        --evaluate W/adp-60.0-0/model.pt W/adp-60.0-0-flow2/model.pt
    # a lever on the same frames at the same data cost (e.g. another flow size):
    python benchmarks/flow_quality.py --molecules ala5 --minutes 60 --seeds 0 --work W \
        --data-from points.jsonl --layers 8 --hidden 128,128
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import boltzgen as bg
from boltzgen.diagnostics.weights import k_hat, k_hat_threshold
from boltzgen.enhanced import replica_exchange
from boltzgen.generator.config import FlowConfig, flow_size
from boltzgen.generator.data import TrainingData
from boltzgen.generator.mixture import sample_mixture
from boltzgen.generator.model import BoltzmannGenerator
from boltzgen.generator.workflow import train_model
from boltzgen.pipeline.config import PipelineConfig
from boltzgen.pipeline.data import frame_cap
from boltzgen.pipeline.training import balanced_data as pipeline_balanced_data
from boltzgen.pipeline.training import likelihood_config
from boltzgen.processes import call_result, kill_workers, spawn_call
from boltzgen.remd_ladder import calibrate_remd, temperature_ladder
from boltzgen.simulation import LangevinConfig

ROOT = Path(__file__).resolve().parents[1]
MOLECULES = {
    "adp": ("alanine dipeptide (vacuum)", None),
    "ala5": ("ACE-(ALA)5-NME (vacuum)", ROOT / "data" / "peptides" / "ace-ala5-nme.pdb"),
    "trp": ("ACE-TRP-NME (vacuum)", ROOT / "data" / "peptides" / "ace-trp-nme.pdb"),
    "serser": ("ACE-SER-SER-NME (vacuum)", ROOT / "data" / "peptides" / "ace-ser-ser-nme.pdb"),
}
#: flow ESS in % (mean of 4 runs, GPU), CMT paper (see /work/shared/REFERENCES.md); the
#: issue's targets for one hour on 2 cores, data included
CMT_TABLE = {
    "columns": ["ADP (60 dims)", "Ala4 (120)", "Ala6 (180)", "ELIL (219)"],
    "maximum likelihood on MD data": [82.1, 45.3, 11.0, 5.9],
    "FAB": [94.8, 63.6, 14.6, 7.2],
    "TA-BG": [95.8, 65.8, 18.2, 13.8],
    "CMT": [97.7, 68.6, 29.6, 26.1],
    "target evaluations (energy-trained)": "1e8-8e8",
    "issue 21 targets, 1 h on 2 cores (flow ESS %)": {"adp": 50, "ala5": 5, "side chain": 2},
}
EXCHANGE = 100  # REMD steps between exchange attempts (as the pipeline)


def core_seconds() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def remd_data(system, seconds: float, seed: int, out: Path, cores: int = 1) -> dict:
    """REMD frames filling about ``seconds`` of wall time (the pipeline's data stage), the
    replicas stepping in min(``cores``, replicas) processes."""
    t0 = time.perf_counter()
    temps, ladder = temperature_ladder(system)
    lang = LangevinConfig(timestep=0.001, seed=seed, threads=1)
    k = min(int(cores), len(temps))
    cal = calibrate_remd(
        system, temps, seconds=min(3.0, max(0.5, 0.03 * seconds)), langevin=lang, n_workers=k
    )
    left = seconds - (time.perf_counter() - t0) - cal["setup_seconds"]
    total = int(0.97 * max(left, 0.0) * cal["steps_per_second"])
    n_equil = min(20_000, total // 10) // EXCHANGE * EXCHANGE
    n_prod = total - n_equil
    report = max(EXCHANGE, math.ceil(n_prod / frame_cap(system.n_atoms) / EXCHANGE) * EXCHANGE)
    n_prod = max(20 * report, n_prod // report * report)
    r = replica_exchange(
        system,
        temps,
        n_steps=n_prod,
        exchange_interval=EXCHANGE,
        report_interval=report,
        n_equilibration=n_equil,
        langevin=lang,
        out=out,
        n_workers=k,
    )
    cal_steps = cal["steps_per_second"] * cal["calibration_seconds"]
    return {
        "positions": np.asarray(r.trajectory.xyz),
        "forces": r.forces,
        "n_replicas": len(temps),
        "replica_processes": k,
        "temperatures_K": [round(float(t), 1) for t in temps],
        "mean_acceptance": float(np.nanmean(r.acceptance)),
        "n_frames": int(r.trajectory.n_frames),
        "md_steps_per_replica": n_prod + n_equil,
        "energy_evals": int(len(temps) * (n_prod + n_equil + cal_steps)),
        "wall_s": time.perf_counter() - t0,
        "predicted_acceptance": ladder.get("predicted_acceptance"),
    }


def molecule_system(key: str):
    """The :class:`~boltzgen.systems.System` of a molecule of :data:`MOLECULES` (vacuum)."""
    pdb = MOLECULES[key][1]
    return bg.System.alanine_dipeptide() if pdb is None else bg.System.from_pdb(pdb)


def train_side_flow(key: str, td: TrainingData, arch: dict, train: dict, out: str) -> dict:
    """One more flow of a point, trained in a worker process (one torch thread); its model
    file and training record."""
    torch.set_num_threads(1)
    _, summary = train_model(molecule_system(key), td, out, architecture=arch, train=train)
    return {
        "model": str(Path(out) / "model.pt"),
        "training": {k: summary[k] for k in ("epochs_run", "stop_reason", "best_val_nll")},
    }


class SideFlows:
    """Flows 2..K of a point, each with its own seeds (seed + 1000 (k - 1)), trained on the
    same frames in worker processes while this process trains flow 1: the cores the data stage
    used stay busy during training."""

    def __init__(self, key, td, arch: FlowConfig, train, out: Path, flows: int) -> None:
        self._workers = []
        for k in range(1, int(flows)):
            a = arch.model_copy(update={"seed": arch.seed + 1_000 * k}).model_dump()
            t = train.model_copy(update={"seed": train.seed + 1_000 * k}).model_dump()
            args = (key, td, a, t, str(out) + f"-flow{k + 1}")
            self._workers.append(spawn_call(train_side_flow, *args))

    def wait(self) -> list[dict]:
        """The side flows' records, once all are trained (SystemExit if one failed)."""
        done = []
        for proc, conn in self._workers:
            status, value = call_result(proc, conn)
            if status != "ok":
                self.close()
                raise SystemExit(f"a side flow failed: {value}")
            done.append(value)
        return done

    def close(self) -> None:
        kill_workers(self._workers)


def balanced_data(system, positions: np.ndarray, forces: np.ndarray | None) -> TrainingData:
    """Frames (n, n_atoms, 3) nm weighted over the backbone states as the pipeline does, with
    its default settings (:func:`boltzgen.pipeline.training.balanced_data`)."""
    return pipeline_balanced_data(system, PipelineConfig(), positions, forces, None)[0]


def reused_data(row: dict, path: Path) -> tuple[dict, float]:
    """(data record, core-seconds) of the earlier point ``row`` whose REMD frames are ``path``,
    the frames read back: a lever is judged on the same data at the same data cost."""
    md = bg.load_md(path)
    if md.forces is None or md.trajectory.n_frames != row["data"]["n_frames"]:
        raise SystemExit(f"{path} does not hold the {row['data']['n_frames']} frames of the row")
    data = {**row["data"], "positions": np.asarray(md.trajectory.xyz), "forces": md.forces}
    data["reused_from"] = str(path)
    return data, float(row["core_seconds_data"])


def point(
    key: str,
    minutes: float,
    seed: int,
    data_share: float,
    draws: int,
    work: Path,
    masks: str = "alternate",
    n_layers: int | None = None,
    hidden: tuple[int, ...] | None = None,
    data_from: dict | None = None,
    finish: float | None = None,
    cores: int = 1,
    flows: int = 1,
):
    name = MOLECULES[key][0]
    wall0, cpu0 = time.perf_counter(), core_seconds()
    torch.manual_seed(seed)
    system = molecule_system(key)
    budget = 60.0 * minutes
    frames = work / f"{key}-{minutes}-{seed}.h5"
    if data_from is None:
        data = remd_data(system, data_share * budget, seed, frames, cores)
        cpu_data = core_seconds() - cpu0
    else:  # an earlier point's frames, its data costs carried over, the same training budget
        data, cpu_data = reused_data(data_from, frames)
        wall0 -= data["wall_s"]
        cpu0 -= cpu_data
    td = balanced_data(system, data["positions"], data["forces"])
    rule = flow_size(3 * system.n_atoms - 6)
    arch = FlowConfig(
        flow="smooth",
        n_layers=n_layers or rule["n_layers"],
        hidden=hidden or rule["hidden"],
        seed=seed,
        masks=masks,
    )
    limit = max(5.0, budget - (time.perf_counter() - wall0))
    train = likelihood_config(rule["lr"], limit, seed)
    if finish is not None:
        train = train.model_copy(update={"finish_fraction": finish})
    model_dir = work / f"{key}-{minutes}-{seed}"
    if n_layers or hidden or masks != "alternate":  # a point beside the rule's: its own dir
        model_dir = model_dir.with_name(
            f"{model_dir.name}-{arch.n_layers}x{'x'.join(map(str, arch.hidden))}"
            + ("" if masks == "alternate" else f"-{masks}")
        )
    side = None
    if flows > 1:  # flows 2..K train in worker processes at the same time as flow 1
        side = SideFlows(key, td, arch, train, model_dir, flows)
    try:
        gen, summary = train_model(system, td, model_dir, architecture=arch, train=train)
    except BaseException:
        if side is not None:
            side.close()
        raise
    others = [] if side is None else side.wait()
    cpu_total, wall_total = core_seconds() - cpu0, time.perf_counter() - wall0
    t_eval, cpu_eval = time.perf_counter(), core_seconds()
    gens = [gen] + [BoltzmannGenerator.load(o["model"], system) for o in others]
    # fresh draws, not the training's
    samples, scores = score_flows(gens, draws, 10_000 + seed, 20_000 + seed)
    s, lw = samples[0], samples[0].log_weights
    side_by_side = {}
    if others:
        side_by_side = {
            "n_flows": len(gens),
            **scores,
            "others_training": [o["training"] for o in others],
        }
    return {
        "molecule": name,
        "key": key,
        "dim": gen.dim,
        "budget_wall_minutes": minutes,
        "seed": seed,
        "cores": cores,
        "flow_ess": s.ess,
        "flow_ess_percent": 100.0 * s.ess,
        "flow_k_hat": scores["flow_k_hat_each"][0],
        "log_weight_sd_robust": scores["log_weight_sd_robust_each"][0],
        "k_hat_threshold": k_hat_threshold(draws),
        "n_draws": draws,
        "n_nonfinite_weights": int((~np.isfinite(lw)).sum()),
        "core_seconds": cpu_total,
        "core_seconds_data": cpu_data,
        "wall_seconds": wall_total,
        "energy_evals": data["energy_evals"],
        "energy_evals_with_draws": data["energy_evals"] + draws,
        "data": {k: v for k, v in data.items() if k not in ("positions", "forces")},
        "flow": {
            "n_layers": arch.n_layers,
            "hidden": list(arch.hidden),
            "masks": arch.masks,
            "n_parameters": summary["n_parameters"],
        },
        "training": {
            **{k: summary[k] for k in ("epochs_run", "stop_reason", "best_val_nll")},
            "finish_fraction": train.finish_fraction,
            "finish": summary["finish"],
        },
        **side_by_side,
        "eval_wall_s": time.perf_counter() - t_eval,
        "eval_core_s": core_seconds() - cpu_eval,
        "load_avg_1m": os.getloadavg()[0],
    }


def score_flows(gens: list, draws: int, flow_seed: int, mixture_seed: int) -> tuple[list, dict]:
    """``draws`` fresh draws of each flow (torch seed ``flow_seed`` + 1000 k for flow k) and,
    for several flows, ``draws`` of their equal-weight mixture (seed ``mixture_seed``): the
    flows' samples and a record of each one's Kish ESS (%) and k-hat, and the mixture's."""
    samples, each, tails, spread = [], [], [], []
    for k, g in enumerate(gens):
        torch.manual_seed(flow_seed + 1_000 * k)
        samples.append(g.sample(draws))
        each.append(100.0 * samples[-1].ess)
        tails.append(k_hat(samples[-1].log_weights))
        spread.append(log_weight_spread(samples[-1].log_weights))
    record: dict = {
        "flow_ess_percent_each": each,
        "flow_k_hat_each": tails,
        "log_weight_sd_robust_each": spread,
    }
    if len(gens) > 1:
        torch.manual_seed(mixture_seed)
        mix = sample_mixture(gens, draws)
        record["mixture_ess_percent"] = 100.0 * mix.ess
        record["mixture_k_hat"] = k_hat(mix.log_weights)
        record["mixture_n_nonfinite_weights"] = int((~np.isfinite(mix.log_weights)).sum())
    return samples, record


def log_weight_spread(log_w) -> float:
    """How far the flow is off when its ESS sits at the floor of 1-2 draws (where the ESS no
    longer ranks flows): the robust sd of the finite log-weights, IQR / 1.349 (nats; lognormal
    weights of sd s have ESS exp(-s^2); robust, because a few clashing draws at log w ~ -1e6
    would set a plain sd)."""
    a = np.asarray(log_w, dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) < 4:
        return float("nan")
    q1, q3 = np.percentile(a, [25.0, 75.0])
    return float((q3 - q1) / 1.349)


def evaluate(key: str, models: list[str], draws: int, seed: int) -> dict:
    """Trained flows of a point evaluated again (``--evaluate``): each flow's Kish ESS and
    k-hat from ``draws`` fresh draws, and their equal-weight mixture's (``draws`` in all)."""
    system = molecule_system(key)
    gens = [BoltzmannGenerator.load(m, system) for m in models]
    _, scores = score_flows(gens, draws, seed, seed + 1_000 * len(gens))
    return {
        "evaluate": models,
        "key": key,
        "seed": seed,
        "n_draws": draws,
        "k_hat_threshold": k_hat_threshold(draws),
        **scores,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--molecules", default="adp")
    ap.add_argument("--minutes", default="5,15", help="wall budgets (data + training)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--draws", type=int, default=20_000)
    ap.add_argument(
        "--data-share",
        type=float,
        default=0.375,
        help="data's share of data + training (the pipeline's 0.3 : 0.5)",
    )
    ap.add_argument("--work", default=None, help="directory for REMD files and models")
    ap.add_argument("--masks", default="alternate", help="coupling schedule (FlowConfig.masks)")
    ap.add_argument("--layers", type=int, default=None, help="coupling layers (default: rule)")
    ap.add_argument("--hidden", default=None, help="conditioner widths, e.g. 128,128 (rule)")
    ap.add_argument(
        "--finish", type=float, default=None, help="finish_fraction (default: the pipeline's)"
    )
    ap.add_argument(
        "--data-from",
        default=None,
        help="JSON lines of earlier points run with this --work: each point reuses the REMD "
        "frames of the row with its molecule, budget and seed, and carries that row's data "
        "cost (core-seconds, energy evaluations, wall time) so the training budget is the same",
    )
    ap.add_argument(
        "--cores",
        type=int,
        default=1,
        help="cores for the data stage's replicas (the training keeps one torch thread: a "
        "second one slowed its steps, RESULTS.md 2026-12-04)",
    )
    ap.add_argument(
        "--flows",
        type=int,
        default=1,
        help="flows trained side by side on the same frames, one process each (use --cores): "
        "each flow's ESS and their equal-weight mixture's (boltzgen.generator.mixture)",
    )
    ap.add_argument(
        "--evaluate",
        nargs="+",
        default=None,
        help="model.pt files of one point (--molecules names the molecule, --seeds the draws' "
        "seed): no training, each flow's and the mixture's ESS and k-hat from --draws draws",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.evaluate:
        seed = int(args.seeds.split(",")[0])
        print(json.dumps(evaluate(args.molecules, args.evaluate, args.draws, seed)), flush=True)
        return
    earlier = {}
    if args.data_from:
        for line in Path(args.data_from).read_text().splitlines():
            row = json.loads(line)
            if "key" in row:
                earlier[(row["key"], float(row["budget_wall_minutes"]), row["seed"])] = row
    hidden = tuple(int(h) for h in args.hidden.split(",")) if args.hidden else None
    print(json.dumps({"cmt_table": CMT_TABLE}), flush=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="flow_quality_"))
    for key in args.molecules.split(","):
        for minutes in (float(m) for m in args.minutes.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                print(
                    json.dumps(
                        point(
                            key,
                            minutes,
                            seed,
                            args.data_share,
                            args.draws,
                            work,
                            args.masks,
                            args.layers,
                            hidden,
                            earlier[(key, minutes, seed)] if args.data_from else None,
                            args.finish,
                            args.cores,
                            args.flows,
                        )
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
