"""Any molecule out of the box: flow vs refined samples, and `boltzgen run` on molecules.

Two parts, one JSON object per result on stdout:

* ``refine`` (ADP vacuum): for each of ``--seeds`` independently trained flows (shipped REMD
  frames, phi > 0 given a 5 % share, ``--train-minutes`` each), flow-only importance sampling
  and stratified refinement side by side as a function of energy evaluations spent: for each
  refinement size the flow-only row uses as many fresh flow draws as the refinement spent
  energy evaluations (so both columns cost the same number of target evaluations). dF(phi)
  of each flow with its stated error; the spread over flows is printed last.

      .venv/bin/python benchmarks/molecules.py refine --seeds 0 1 --train-minutes 5

* ``run``: `boltzgen run` (``run_pipeline``) on PDBs with a budget; a row per molecule with the
  wall time per stage, ESS (flow and refined), dF per residue (refined / REMD data), clashes.

      .venv/bin/python benchmarks/molecules.py run data/ace-tyr-nme.pdb --budget 15m

* ``reference``: each molecule's own reference dF per residue state dihedral
  (:func:`boltzgen.cv.state_dihedrals`: phi, psi for proline), by well-tempered metadynamics
  over all of them at once (up to three; phi and psi together for a single non-proline
  residue) with the bias then frozen and frames reweighted
  exactly (:func:`boltzgen.metadynamics.metadynamics`); a row per seed (with the dF of each
  half of the record) and a combined row (mean; error = max(stated, spread over seeds) /
  sqrt(seeds)).

      .venv/bin/python benchmarks/molecules.py reference data/peptides/*.pdb --seeds 1 2

* ``baseline``: enhanced sampling alone for a wall-clock budget on one core (``--method remd``:
  5-replica REMD, the 300 K replica; ``metad``: metadynamics over the state dihedrals, 30 % of
  the steps learning the bias), with dF of the first state dihedral and its block-bootstrap
  error over growing prefixes of the record (1/8, 1/4, 1/2, all) and the core-seconds each
  prefix cost, to set beside ``run`` rows made at the same time on the other core; each
  prefix also gives every backbone sign pattern's -log P (``states``), as the reference rows
  do (``benchmarks/state_populations.py`` scores them).

      .venv/bin/python benchmarks/molecules.py baseline data/alanine-dipeptide.pdb \
          --method remd --minutes 10
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from boltzgen.jsonable import json_clean  # noqa: E402

REFERENCE_VACUUM = (3.87, 0.16)  # umbrella sampling + MBAR, 4 walks (RESULTS.md)


def _emit(row: dict) -> None:
    print(json.dumps(json_clean(row)), flush=True)  # non-finite floats as null


def refine_part(args) -> None:
    from boltzgen.analysis import free_energy_difference
    from boltzgen.cv import dihedral
    from boltzgen.generator.balance import backbone_state_labels
    from boltzgen.generator.config import BalanceConfig
    from boltzgen.generator.workflow import train_model
    from boltzgen.md import load_md
    from boltzgen.refinement.planning import refine_by_backbone_state, strata_free_energy

    md = load_md(args.data)
    system = md.system()
    phi = dihedral(system, "phi")
    a, b = (0.0, math.pi), (-math.pi, 0.0)
    finals = []
    for seed in args.seeds:
        out = Path(tempfile.mkdtemp(prefix=f"mol-refine-{seed}-"))
        t0 = time.perf_counter()
        gen, ts = train_model(
            system,
            md,
            out,
            architecture={"flow": "smooth", "seed": seed},
            train={"epochs": 500, "time_limit": 60 * args.train_minutes, "seed": seed},
            balance=BalanceConfig(),
        )
        train_s = time.perf_counter() - t0
        torch.manual_seed(1000 + seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pool = gen.sample(args.pool)
        names = backbone_state_labels(system, pool.positions[:1])[1]
        for n in args.particles:
            t0 = time.perf_counter()
            refined, dropped = refine_by_backbone_state(
                gen, pool, system, n, n_steps=args.refine_steps, seed=seed
            )
            t_ref = time.perf_counter() - t0
            df, err = strata_free_energy(refined.history["strata"], names.index("phi:2"))
            evals = int(refined.n_energy_evals)
            # flow only, same number of target evaluations (fresh draws beyond the pool)
            m = min(evals, args.max_flow_draws)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flow = gen.sample(m)
            t_flow = time.perf_counter() - t0
            df_f, err_f = free_energy_difference(flow, phi(flow.positions), a, b, seed=seed)
            row = {
                "part": "refine",
                "system": "ADP vacuum",
                "flow_seed": seed,
                "train_s": train_s,
                "epochs": ts["epochs_run"],
                "energy_evals": evals,
                "refined": {
                    "n_particles": len(refined),
                    "ess": refined.history["ess"][-1],
                    "df_kT": df,
                    "err_kT": err,
                    "time_s": t_ref,
                    "strata": refined.history["strata"],
                    "mass_dropped": dropped,
                },
                "flow_only": {
                    "n_samples": m,
                    "ess": float(flow.ess),
                    "df_kT": df_f,
                    "err_kT": err_f,
                    "time_s": t_flow,
                },
                "reference_kT": REFERENCE_VACUUM,
            }
            _emit(row)
        finals.append((df, err))
    if len(finals) > 1:
        d = np.array([f[0] for f in finals])
        e = np.array([f[1] for f in finals])
        spread = float(np.std(d, ddof=1))
        _emit(
            {
                "part": "refine-summary",
                "df_each_kT": d.tolist(),
                "err_each_kT": e.tolist(),
                "df_mean_kT": float(d.mean()),
                # error of the mean: the larger of the stated errors and the spread over flows
                "err_mean_kT": float(max(np.sqrt(np.mean(e**2)), spread) / math.sqrt(len(d))),
                "spread_over_flows_kT": spread,
                "reference_kT": REFERENCE_VACUUM,
            }
        )


def run_part(args) -> None:
    from boltzgen.pipeline import parse_duration, run_pipeline

    for pdb in args.pdbs:
        out = Path(args.out or tempfile.mkdtemp(prefix="mol-run-")) / Path(pdb).stem
        cfg = {
            "budget_minutes": parse_duration(args.budget) / 60,
            "solvent": args.solvent,
            "seed": args.seed,
            "sampler": args.sampler,
        }
        t0 = time.perf_counter()
        s = run_pipeline(pdb, out, cfg)
        ref = s["refine"]
        _emit(
            {
                "part": "run",
                "molecule": Path(pdb).name,
                "n_atoms": s["system"]["n_atoms"],
                "solvent": args.solvent,
                "budget_s": cfg["budget_minutes"] * 60,
                "wall_s": time.perf_counter() - t0,
                "wall_time_s": s["wall_time_s"],
                "ess_flow": ref.get("ess_before", s["sampling"].get("ess")),
                "ess_refined": ref.get("ess"),
                "energy_evals_refine": ref.get("n_energy_evals"),
                "free_energies": {
                    k: {
                        "df_kT": v["df_kT"],
                        "err_kT": v["err_kT"],
                        "df_data_kT": v["df_data_kT"],
                        "err_data_kT": v["err_data_kT"],
                    }
                    for k, v in s["free_energies"].items()
                },
                "clash_fraction": s["clash_fraction"],
                "sampler": s["data"]["sampler"],
                "data": {
                    k: s["data"].get(k)
                    for k in ("simulated_ns_per_replica", "simulated_ns", "n_frames", "ess")
                },
                "n_replicas": s["data"].get("ladder", {}).get("n_replicas"),
                "flow": {k: s["flow"].get(k) for k in ("n_layers", "hidden", "epochs_run")},
                "out": str(out),
            }
        )


def reference_part(args) -> None:
    from boltzgen.cv import RING_LOCKED_PHI, backbone_dihedrals, state_dihedrals
    from boltzgen.metadynamics import metadynamics
    from boltzgen.simulation import LangevinConfig
    from boltzgen.systems import System

    a, b = (0.0, math.pi + 1e-4), (-math.pi - 1e-4, 0.0)
    for pdb in args.pdbs:
        system = System.from_pdb(pdb, solvent=args.solvent)
        cvs = list(state_dihedrals(system).values())
        if len(cvs) == 1:  # one residue: bias phi and psi together (psi relaxes slowly too)
            res = cvs[0].name.split(":")[1]
            bb = backbone_dihedrals(system)
            both = [bb[k] for k in (f"phi:{res}", f"psi:{res}") if k in bb]
            if system.topology.atom(cvs[0].atoms[1]).residue.name not in RING_LOCKED_PHI:
                cvs = both
        if args.side_chain:  # slow rotamers (e.g. an indole's chi1/chi2) biased too: at most 3
            from boltzgen.cv import dihedral

            cvs = cvs[:1] + [dihedral(system, name) for name in args.side_chain]
        per_seed: dict[str, list[tuple[float, float]]] = {c.name: [] for c in cvs}
        frames: list[dict[str, np.ndarray]] = []
        for seed in args.seeds:
            r = metadynamics(
                system,
                cvs,
                n_metadynamics_steps=args.metad_steps,
                n_steps=args.production_steps,
                langevin=LangevinConfig(seed=seed, platform=args.platform),
            )
            n, free = len(r.bias), {}
            for i, c in enumerate(cvs):
                df, err = r.free_energy_difference(i, a, b)
                halves = r.sign_free_energy_by_part(i, 2)
                free[c.name] = {"df_kT": df, "err_kT": err, "halves_kT": halves}
                per_seed[c.name].append((df, err))
            if args.frames_out:
                frames.append(_reference_frames(system, cvs[0], r))
            _emit(
                {
                    "part": "reference",
                    "molecule": Path(pdb).name,
                    "solvent": args.solvent,
                    "seed": seed,
                    "free_energies": free,
                    "states": _state_rows(system, r.positions, r.log_weights),
                    "ess": r.ess,
                    "n_frames": n,
                    "wall_s": r.wall_time,
                    "settings": r.settings,
                }
            )
        combined = {}
        for name, rows in per_seed.items():
            dfs, errs = np.array([x[0] for x in rows]), np.array([x[1] for x in rows])
            spread = float(np.std(dfs, ddof=1)) if len(dfs) > 1 else float("nan")
            stated = float(np.sqrt(np.mean(errs**2)))
            combined[name] = {
                "df_kT": float(dfs.mean()),
                "err_kT": max(stated, spread if np.isfinite(spread) else 0.0) / math.sqrt(len(dfs)),
                "spread_kT": spread,
            }
        _emit({"part": "reference", "molecule": Path(pdb).name, "combined": combined})
        if args.frames_out:
            out = Path(args.frames_out) / f"{Path(pdb).stem}-{args.solvent}-reference.npz"
            np.savez_compressed(
                out, **{k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
            )
            _emit({"part": "reference", "molecule": Path(pdb).name, "frames": str(out)})


def _state_rows(system, positions, log_weights, halves: bool = True) -> dict:
    """Every backbone sign pattern's -log P (kT) of one record (block bootstrap, 40 blocks)
    and, with ``halves``, of each half of it: the record's own convergence check."""
    from boltzgen.analysis import state_free_energies
    from boltzgen.cv import backbone_state_labels

    labels, names = backbone_state_labels(system, positions)
    lw = np.zeros(len(labels)) if log_weights is None else np.asarray(log_weights)

    def one(sl: slice) -> dict:
        lab = labels[sl]
        return state_free_energies(lab, lw[sl], block_size=max(1, len(lab) // 40), seed=0)

    n = len(labels)
    out = {"dihedrals": names, "all": one(slice(None))}
    if halves:
        out["halves"] = [one(slice(0, n // 2)), one(slice(n // 2, None))]
    return out


def _reference_frames(system, state_cv, r) -> dict[str, np.ndarray]:
    """(phi, psi) of the state dihedral's residue and each frame's weight, the walker's weights
    normalised to 1, so walkers pool with equal say (the format ``benchmarks/cg.py
    --reference`` reads)."""
    from boltzgen.cg.frames import weights_from_log
    from boltzgen.cv import backbone_dihedrals, parse_cv_name

    _, res = parse_cv_name(state_cv.name)
    bb = backbone_dihedrals(system)
    w = weights_from_log(r.log_weights, len(r.log_weights), "metadynamics log-weights")
    return {
        "phi": np.asarray(bb[f"phi:{res}"](r.positions), dtype=np.float32),
        "psi": np.asarray(bb[f"psi:{res}"](r.positions), dtype=np.float32),
        "weight": w / w.sum(),
    }


def baseline_part(args) -> None:
    from boltzgen.cv import state_dihedrals
    from boltzgen.enhanced import geometric_temperatures, replica_exchange
    from boltzgen.md import calibrate_md
    from boltzgen.metadynamics import metadynamics
    from boltzgen.simulation import LangevinConfig
    from boltzgen.systems import System

    a, b = (0.0, math.pi + 1e-4), (-math.pi - 1e-4, 0.0)
    langevin = LangevinConfig(seed=args.seed)
    system = System.from_pdb(args.pdb, solvent=args.solvent)
    cvs = list(state_dihedrals(system).values())
    t0 = time.perf_counter()
    cal = calibrate_md(system, seconds=3.0, langevin=langevin)
    seconds = 60.0 * args.minutes - (time.perf_counter() - t0)
    if args.method == "remd":
        temps = geometric_temperatures(system.temperature, 2 * system.temperature, args.replicas)
        steps = int(0.9 * seconds * cal["steps_per_second"] / len(temps)) // 1000 * 1000
        r = replica_exchange(
            system, temps, n_steps=steps, exchange_interval=100, report_interval=200,
            n_equilibration=20_000, langevin=langevin,
        )  # fmt: skip
        positions = r.trajectory.xyz
        values, log_w = cvs[0](positions), np.zeros(r.trajectory.n_frames)
        learn_fraction = 0.0
    else:
        total = int(0.85 * seconds * cal["steps_per_second"])
        learn = int(0.3 * total) // 500 * 500
        r = metadynamics(
            system,
            cvs,
            n_metadynamics_steps=learn,
            n_steps=total - learn,
            report_interval=200,
            langevin=langevin,
            time_limit=seconds,
        )  # fmt: skip (a 3-D bias's deposits slow it)
        positions, values, log_w = r.positions, r.cv[:, 0], r.log_weights
        learn_fraction = learn / total
    wall = time.perf_counter() - t0
    from boltzgen.analysis import free_energy_difference

    rows = []
    n = len(values)
    for frac in (0.125, 0.25, 0.5, 1.0):
        m = int(n * frac)
        df, err = free_energy_difference(
            values[:m], values[:m], a, b, n_bootstrap=200, block_size=max(1, m // 40),
            log_weights=log_w[:m], period=2 * math.pi,
        )  # fmt: skip
        # core-seconds of this prefix: learning (metad) + its share of the record
        cost = wall * (learn_fraction + (1 - learn_fraction) * frac)
        states = _state_rows(system, positions[:m], log_w[:m], halves=False)
        rows.append(
            {"fraction": frac, "core_s": cost, "df_kT": df, "err_kT": err, "states": states}
        )
    _emit(
        {
            "part": "baseline",
            "method": args.method,
            "molecule": Path(args.pdb).name,
            "solvent": args.solvent,
            "cv": cvs[0].name,
            "seed": args.seed,
            "wall_s": wall,
            "n_frames": n,
            "prefixes": rows,
        }
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    r = sub.add_parser("refine")
    r.add_argument("--data", default=str(ROOT / "data" / "adp-vacuum-remd.h5"))
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--train-minutes", type=float, default=5.0)
    r.add_argument("--pool", type=int, default=20_000, help="flow draws to refine from")
    r.add_argument("--particles", type=int, nargs="+", default=[200, 500, 1000, 2000])
    r.add_argument("--refine-steps", type=int, default=3)
    r.add_argument("--max-flow-draws", type=int, default=1_000_000)
    m = sub.add_parser("run")
    m.add_argument("pdbs", nargs="+")
    m.add_argument("--budget", default="60m")
    m.add_argument("--solvent", default="vacuum")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--sampler", default="auto", choices=["auto", "remd", "metad"])
    m.add_argument("--out", default=None)
    f = sub.add_parser("reference")
    f.add_argument("pdbs", nargs="+")
    f.add_argument("--solvent", default="vacuum")
    f.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    f.add_argument("--metad-steps", type=int, default=1_500_000)
    f.add_argument("--production-steps", type=int, default=3_000_000)
    f.add_argument("--platform", default="auto")
    f.add_argument(
        "--frames-out",
        default=None,
        help="directory for MOLECULE-SOLVENT-reference.npz: every walker's (phi, psi) of the "
        "state residue with weights (walkers pooled with equal say; cg.py --reference reads it)",
    )
    f.add_argument(
        "--side-chain",
        nargs="+",
        default=None,
        help="side-chain dihedrals biased beside the first state dihedral, e.g. chi1:2 chi2:2",
    )
    bl = sub.add_parser("baseline")
    bl.add_argument("pdb")
    bl.add_argument("--method", choices=["remd", "metad"], default="remd")
    bl.add_argument("--minutes", type=float, default=10.0)
    bl.add_argument("--solvent", default="vacuum")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--replicas", type=int, default=5, help="REMD replicas (300-600 K)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = {"refine": refine_part, "run": run_part, "reference": reference_part}
    parts["baseline"] = baseline_part
    parts[args.part](args)


if __name__ == "__main__":
    main()
