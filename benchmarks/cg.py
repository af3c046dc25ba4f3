"""Coarse-graining benchmark: flow matching on N frames vs classical force matching on M frames.

Each run maps an evenly strided subset of the training data onto the backbone beads, trains
(flow matching: teacher flow + teacher forces; force matching: mapped all-atom forces),
simulates the CG force field and scores the phi/psi distribution against a reference (all
frames of ``--reference``). Prints one JSON object per run.

    .venv/bin/python benchmarks/cg.py --runs flow:2000 forces:2000 forces:20000 \
        --data data/adp-vacuum-remd.h5 --reference data/adp-vacuum-remd.h5

Training data from metadynamics instead of an MD file: ``--make-metad-data out.npz`` runs
well-tempered metadynamics over (phi, psi) and then samples with the bias frozen
(:func:`boltzgen.metadynamics.metadynamics`), computes each frame's all-atom forces, and writes
positions, forces and log-weights; ``--data out.npz`` then trains on those frames with their
weights (the teacher fits the reweighted density). A reference npz of the same kind
(``--reference ref.npz``) scores against the weighted (phi, psi) histogram.

    .venv/bin/python benchmarks/cg.py --make-metad-data /tmp/metad-train.npz --seed 11 \
        --metad-steps 2000000 --metad-production-steps 6000000 --metad-interval 40
    .venv/bin/python benchmarks/cg.py --runs flow:2000 forces:60000 --data /tmp/metad-train.npz \
        --reference /tmp/metad-ref.npz

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

import numpy as np  # noqa: E402

from boltzgen import cg  # noqa: E402
from boltzgen.systems import System  # noqa: E402


def make_metad_data(path: str, args) -> None:
    """Metadynamics over (phi, psi) of the state residue (``--pdb``, default ADP; vacuum), bias
    frozen; frames with forces and log-weights exp(V/kT) to an npz."""
    import boltzgen as bg
    from boltzgen.metadynamics import metadynamics
    from boltzgen.simulation import LangevinConfig

    system = System.from_pdb(args.pdb) if args.pdb else System.alanine_dipeptide()
    kind, res = bg.cv.parse_cv_name(next(iter(bg.cv.state_dihedrals(system).values())).name)
    col = 1 if kind == "psi" else 0  # proline: psi is the state dihedral
    t0 = time.perf_counter()
    r = metadynamics(
        system,
        [bg.cv.dihedral(system, f"phi:{res}"), bg.cv.dihedral(system, f"psi:{res}")],
        n_metadynamics_steps=args.metad_steps,
        n_steps=args.metad_production_steps,
        report_interval=args.metad_interval,
        langevin=LangevinConfig(seed=args.seed, platform="Reference"),
    )
    em = bg.EnergyModel(system, n_workers=1, platform="Reference")
    forces = np.concatenate(
        [
            em.energy_and_forces(r.positions[i : i + 5000].astype(np.float64))[1]
            for i in range(0, len(r.positions), 5000)
        ]
    ).astype(np.float32)
    np.savez_compressed(path, positions=r.positions, forces=forces, log_weight=r.log_weights)
    state = r.cv[:, col]
    df, err = r.free_energy_difference(col, (0.0, np.pi + 1e-4), (-np.pi - 1e-4, 0.0))
    row = {
        "made": path,
        "n_frames": len(state),
        "ess": r.ess,
        "state_dihedral": f"{kind}:{res}",
        "frac_state_positive_biased": float((state >= 0).mean()),
        "df_kT": df,
        "err_kT": err,
        "time_s": time.perf_counter() - t0,
        "settings": r.settings,
    }
    print(json.dumps(row), flush=True)


def _load(path: str):
    """(frames for cg.train_and_simulate, forces or None, frame weights or None). An npz with
    ``phi``, ``psi`` and ``weight`` (a reference of dihedrals only, e.g. pooled metadynamics
    walkers) gives ((N, 2) dihedrals, None, weights); a samples HDF5 file (positions and
    log-weights) gives (positions, None, weights)."""
    if str(path).endswith(".npz"):
        d = np.load(path)
        if "phi" in d.files:
            return np.stack([d["phi"], d["psi"]], 1), None, d["weight"]
        lw = d["log_weight"]
        return d["positions"], d["forces"], np.exp(lw - lw.max())
    x, f, lw = cg.load_weighted_frames(path)  # MD file, or weighted samples (refined.h5)
    return x, f, None if lw is None else cg.frames.weights_from_log(lw, len(x))


def decompose(run_dir: Path, ref_d, ref_w, system, data, n: int, seed: int) -> dict:
    """A trained run's surface error split without MD: ``n`` fresh draws of its teacher, scored
    as the calibrated teacher (the student's target) and, importance-weighted by
    exp(-E/kT - log q), as the student's own equilibrium; both against the reference. The
    run's MD score (``metrics.json``) beside them shows what the CG MD adds, and the training
    frames' own surface (``data``: positions or an MD file, unweighted) what the data allow."""
    mapping = cg.Mapping.backbone(system)
    cgs = mapping.cg_system()
    teacher = cg.CGFlow.load(run_dir / "teacher.pt")
    ff = cg.CGForceField.load(run_dir / "forcefield.pt")
    summary = json.loads((run_dir / "summary.json").read_text())
    calibration = summary.get("basins", {}).get("calibration", {}) or {}
    torch.manual_seed(seed)
    xs, lqs, es = [], [], []
    with torch.no_grad():
        for start in range(0, n, 4096):
            x, lq = teacher.sample_positions(min(4096, n - start))
            xs.append(x.double().numpy())
            lqs.append(lq.double().numpy())
            es.append(ff.energy(x.double()).double().numpy())
    x, lq, e = np.concatenate(xs), np.concatenate(lqs), np.concatenate(es)
    labels = cg.basins.state_labels(cgs.topology, x)
    shift = np.array([calibration.get(str(s), 0.0) for s in labels])
    d = cgs.dihedrals(x)[:, :2]
    col = cg.basins.state_column(cgs)
    out: dict = {"decompose": str(run_dir), "n_draws": n}
    for name, lw in (("teacher_calibrated", shift), ("student_by_is", -e / cgs.kT - lq)):
        ok = np.isfinite(lw)
        w = np.where(ok, np.exp(lw - lw[ok].max()), 0.0)
        scores = cg.metrics.evaluate(
            ref_d, d, cgs.temperature, reference_weights=ref_w, model_weights=w, df_column=col
        )
        out[name] = {**scores, "ess": float(w.sum() ** 2 / (w**2).sum() / len(w))}
    x_data = data if isinstance(data, np.ndarray) else data.trajectory.xyz
    d_data = cgs.dihedrals(mapping.map_positions(x_data))[:, :2]
    out["data"] = cg.metrics.evaluate(
        ref_d, d_data, cgs.temperature, reference_weights=ref_w, df_column=col
    )
    md = run_dir / "metrics.json"
    out["cg_md"] = json.loads(md.read_text()) if md.exists() else None
    return out


def _extra(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


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
    p.add_argument("--steps", type=int, default=40_000)
    p.add_argument("--timestep", type=float, default=0.001)
    p.add_argument("--discard", type=int, default=20, help="frames per walker not scored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pdb", default=None, help="the all-atom system (default: alanine dipeptide)")
    p.add_argument(
        "--state-shares",
        default=None,
        help="weighted samples (samples.h5 of a refined boltzgen run) whose backbone-state "
        "shares the frames are reweighted to (cg.train_and_simulate(state_shares=))",
    )
    p.add_argument("--out", default=None, help="directory for run outputs (default: temp)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--make-metad-data", default=None, help="write metadynamics frames (npz)")
    p.add_argument(
        "--simulate", default=None, help="only CG MD of this forcefield.pt (starts: --data)"
    )
    p.add_argument(
        "--set",
        dest="set_",
        action="append",
        default=[],
        help="extra CGConfig option key=value (JSON value), repeatable",
    )
    p.add_argument(
        "--decompose",
        nargs="+",
        default=None,
        help="run directories (teacher.pt, forcefield.pt, summary.json): score the calibrated "
        "teacher and the student by importance sampling, no MD (--teacher-samples draws)",
    )
    p.add_argument("--metad-steps", type=int, default=2_000_000)
    p.add_argument("--metad-production-steps", type=int, default=6_000_000)
    p.add_argument("--metad-interval", type=int, default=40)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.make_metad_data:
        make_metad_data(args.make_metad_data, args)
        return

    data, forces, weights = _load(args.data)
    ref, _, ref_w = _load(args.reference or args.data)
    system = System.from_pdb(args.pdb) if args.pdb else System.alanine_dipeptide()
    mapping = cg.Mapping.backbone(system)
    if isinstance(ref, np.ndarray) and ref.ndim == 2:
        ref_d = ref
    else:
        ref_x = ref if isinstance(ref, np.ndarray) else ref.trajectory.xyz
        ref_d = mapping.cg_system().dihedrals(mapping.map_positions(ref_x))[:, :2]
    if args.decompose:
        for run_dir in args.decompose:
            row = decompose(
                Path(run_dir), ref_d, ref_w, system, data, args.teacher_samples, args.seed
            )
            print(json.dumps(row), flush=True)
        return
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cg-bench-"))
    if args.simulate:
        md_cfg = {
            "n_walkers": args.walkers,
            "n_steps": args.steps,
            "timestep": args.timestep,
            "discard_frames": args.discard,
            "seed": args.seed,
        }
        s = cg.run_simulation(
            args.simulate,
            data,
            mapping,
            out_root / "simulate",
            md_cfg,
            frame_weights=weights,
            reference=ref_d,
            reference_weights=ref_w,
        )
        print(json.dumps({"simulate": args.simulate, **s, "config": md_cfg}), flush=True)
        return
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
            **_extra(args.set_),
        }
        t0 = time.perf_counter()
        row = {"run": spec, "data": args.data, "reference": args.reference or args.data}
        try:
            s = cg.train_and_simulate(
                data,
                mapping,
                out_root / spec.replace(":", "_"),
                config,
                forces=forces,
                frame_weights=weights,
                reference=ref_d,
                reference_weights=ref_w,
                state_shares=args.state_shares,
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
            basins=s.get("basins"),
            state_shares=s.get("state_shares"),
            student=s["student"],
            md=s["md"],
            time_s=s["time_s"],
            out=str(out_root / spec.replace(":", "_")),
            config=config,
        )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
