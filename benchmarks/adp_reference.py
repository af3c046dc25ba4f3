"""Reference free energy dF = F(phi > 0) - F(phi < 0) of alanine dipeptide (amber99sbildn, 300 K).

Umbrella sampling along phi + MBAR, in vacuum and with OBC (obc2) implicit solvent, and as a
cross-check in vacuum the 300 K replica of a temperature replica-exchange run (which is also
the generator's training set when ``--remd-out`` is given). One JSON object per line.

    .venv/bin/python benchmarks/adp_reference.py --part umbrella --solvent vacuum
    .venv/bin/python benchmarks/adp_reference.py --part umbrella --solvent obc2
    .venv/bin/python benchmarks/adp_reference.py --part metad --solvent obc2 --seeds 1 \
        --metad-out /tmp/metad     # 2-D (phi, psi); run seeds in parallel processes
    .venv/bin/python benchmarks/adp_reference.py --part remd --remd-out data/adp-vacuum-remd.h5
    .venv/bin/python benchmarks/adp_reference.py --part reweight --solvent obc2 \
        --remd-in data/adp-vacuum-remd.h5

Literature (metadynamics, amber99sbildn): about 3.6 kT in vacuum, 3.8 kT with OBC. Compared,
not enforced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

torch.set_num_threads(1)

LITERATURE = {"vacuum": 3.6, "obc2": 3.8}
STATE_A = (0.0, math.pi + 1e-4)  # phi > 0 (phi in (-pi, pi])
STATE_B = (-math.pi - 1e-4, 0.0)  # phi < 0


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def run_umbrella(args, solvent: str, seed: int) -> None:
    import boltzgen as bg
    from boltzgen.enhanced import umbrella_sampling
    from boltzgen.simulation import LangevinConfig

    system = bg.System.alanine_dipeptide(solvent=solvent)
    phi = bg.cv.dihedral(system, "phi")
    centers = np.linspace(-math.pi, math.pi, args.windows, endpoint=False)
    r = umbrella_sampling(
        system,
        phi.atoms,
        centers,
        k=args.k,
        n_steps_per_window=args.steps_per_window,
        n_equilibration=args.equilibration,
        report_interval=args.report_interval,
        langevin=LangevinConfig(
            timestep=args.timestep, seed=seed, platform=args.platform, threads=args.threads
        ),
    )
    df, err = r.free_energy_difference(STATE_A, STATE_B)
    c, f, f_err = r.profile(bins=36)
    emit(
        benchmark="adp_reference",
        method="umbrella+MBAR",
        solvent=solvent,
        temperature_K=300.0,
        df_kT=round(df, 4),
        err_kT=round(err, 4),
        literature_kT=LITERATURE[solvent],
        wall_s=round(r.wall_time, 1),
        simulated_ns=round(
            args.windows * (args.steps_per_window + args.equilibration) * args.timestep / 1000,
            3,
        ),
        mean_statistical_inefficiency=round(float(np.mean(r.g)), 2),
        n_independent=int(r.n_independent.sum()),
        profile_kT=[None if not np.isfinite(x) else round(float(x), 2) for x in f],
        profile_err_kT=[None if not np.isfinite(x) else round(float(x), 2) for x in f_err],
        settings=r.settings,
    )


def run_metad(args, seed: int) -> None:
    """2-D (phi, psi) well-tempered metadynamics, then the bias frozen and frames reweighted
    exactly (boltzgen.metadynamics); dF over the whole record and over its halves and
    quarters (convergence), the 2-D FES, and an npz of (phi, psi, log-weight) per frame."""
    import boltzgen as bg
    from boltzgen.metadynamics import metadynamics
    from boltzgen.simulation import LangevinConfig

    system = bg.System.alanine_dipeptide(solvent=args.solvent)
    cvs = [bg.cv.dihedral(system, "phi"), bg.cv.dihedral(system, "psi")]
    r = metadynamics(
        system,
        cvs,
        n_metadynamics_steps=args.metad_steps,
        n_steps=args.metad_production_steps,
        report_interval=args.report_interval,
        bias_factor=args.bias_factor,
        langevin=LangevinConfig(seed=seed, platform=args.platform, threads=args.threads),
    )
    df, err = r.free_energy_difference(0, STATE_A, STATE_B)
    n = len(r.bias)
    parts = {}
    for k in (2, 4):
        parts[f"df_{k}_parts_kT"] = [round(x, 3) for x in r.sign_free_energy_by_part(0, k)]
    if args.metad_out:
        out = f"{args.metad_out}-{args.solvent}-seed{seed}.npz"
        np.savez_compressed(out, phi=r.cv[:, 0], psi=r.cv[:, 1], log_weight=r.log_weights)
    emit(
        benchmark="adp_reference",
        method="metadynamics(phi,psi)+fixed-bias reweighting",
        solvent=args.solvent,
        seed=seed,
        df_kT=round(df, 4),
        err_kT=round(err, 4),
        ess=round(r.ess, 4),
        n_frames=n,
        phi_sign_changes=int((np.diff(np.sign(r.cv[:, 0])) != 0).sum()),
        wall_s=round(r.wall_time, 1),
        simulated_ns=round((args.metad_steps + args.metad_production_steps) * 0.001 / 1000, 3),
        **parts,
        settings=r.settings,
    )


def run_remd(args) -> None:
    import boltzgen as bg
    from boltzgen.enhanced import geometric_temperatures, replica_exchange
    from boltzgen.simulation import LangevinConfig

    system = bg.System.alanine_dipeptide(solvent=args.solvent)
    temps = geometric_temperatures(300.0, args.t_max, args.replicas)
    r = replica_exchange(
        system,
        temps,
        n_steps=args.remd_steps,
        exchange_interval=args.exchange_interval,
        report_interval=args.remd_interval,
        n_equilibration=args.remd_equilibration,
        out=args.remd_out,
        langevin=LangevinConfig(
            timestep=args.timestep, seed=args.seed, platform=args.platform, threads=args.threads
        ),
    )
    row = {
        **remd_stats(system, r.trajectory.xyz),
        "wall_s": round(r.wall_time, 1),
        "temperatures_K": [round(float(t), 1) for t in temps],
        "acceptance": [round(float(a), 3) for a in r.acceptance],
        "walkers_at_300K": int(len(np.unique(r.replica_of_frame))),
        "settings": r.settings,
    }
    if args.remd_out:
        row["file"] = str(args.remd_out)
        row["file_MB"] = round(os.path.getsize(args.remd_out) / 1e6, 2)
    emit(**row)


def block_bootstrap_df(phi: np.ndarray, log_weights: np.ndarray | None = None) -> dict:
    """dF(phi) with moving-block bootstrap errors at block sizes 1, 200 and 1000 frames
    (correlated MD frames: the error grows with the block until the blocks are independent)."""
    from boltzgen.analysis import free_energy_difference

    row = {}
    for block in (1, 200, 1000):
        df, err = free_energy_difference(
            phi,
            cv=phi,
            state_a=STATE_A,
            state_b=STATE_B,
            block_size=block,
            n_bootstrap=500,
            log_weights=log_weights,
        )
        row[f"df_kT_block{block}"] = round(df, 4)
        row[f"err_kT_block{block}"] = round(err, 4)
    return row


def remd_stats(system, xyz) -> dict:
    """phi statistics and block-bootstrap dF of the target-temperature replica's frames."""
    import boltzgen as bg

    v = bg.cv.dihedral(system, "phi")(xyz)
    row = {
        "benchmark": "adp_reference",
        "method": "REMD (300 K replica, block bootstrap)",
        "solvent": system.solvent,
        "temperature_K": system.temperature,
        "literature_kT": LITERATURE.get(system.solvent),
        "n_frames": len(v),
        "fraction_phi_positive": round(float(np.mean(v > 0)), 5),
        "transitions_phi_sign": int(np.sum((v[1:] > 0) != (v[:-1] > 0))),
    }
    return {**row, **block_bootstrap_df(v)}


def analyse_remd_file(path: str) -> None:
    """The statistics of an existing REMD file (e.g. from ``boltzgen remd``)."""
    import boltzgen as bg

    md = bg.load_md(path)
    emit(**remd_stats(md.system(), md.trajectory.xyz), file=path, settings=md.metadata)


def reweight_remd_files(args) -> None:
    """dF in ``--solvent`` from REMD frames of another Hamiltonian (e.g. cheap vacuum REMD
    reweighted to OBC2): log w = -(u_target - u_data) per frame, in kT at 300 K, then the same
    block bootstrap. An independent estimate when the overlap (ESS) is large enough."""
    import boltzgen as bg
    from boltzgen.analysis import kish_ess

    mds = [bg.load_md(path) for path in args.remd_in]
    md = bg.concatenate_md(mds)
    data_system = md.system()
    target = bg.System.from_spec({**data_system.to_spec(), "solvent": args.solvent})
    xyz = md.trajectory.xyz
    with bg.EnergyModel(target, platform=args.platform) as em:
        e_target = em.energies_kj(xyz)
    # the data energies were computed with the data's own force field, so log w is exact
    log_w = -(e_target - md.potential_energy) / target.kT
    phi = bg.cv.dihedral(target, "phi")(xyz)
    row = {
        "benchmark": "adp_reference",
        "method": f"REMD ({data_system.solvent}) reweighted to {args.solvent}, block bootstrap",
        "solvent": args.solvent,
        "files": args.remd_in,
        "n_frames": len(phi),
        "ess": round(kish_ess(log_w), 4),
        "ess_phi_positive": round(kish_ess(log_w[phi > 0]), 4),
        "ess_phi_negative": round(kish_ess(log_w[phi < 0]), 4),
        "n_phi_positive": int((phi > 0).sum()),
        "literature_kT": LITERATURE.get(args.solvent),
    }
    emit(**row, **block_bootstrap_df(phi, log_w))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--part", choices=["umbrella", "metad", "remd", "remd-file", "reweight"], default="umbrella"
    )
    p.add_argument("--solvent", choices=["vacuum", "obc2"], default="vacuum")
    p.add_argument("--windows", type=int, default=36)
    p.add_argument("--k", type=float, default=200.0, help="kJ/mol/rad^2")
    p.add_argument("--steps-per-window", type=int, default=200_000)
    p.add_argument("--equilibration", type=int, default=20_000)
    p.add_argument("--report-interval", type=int, default=100)
    p.add_argument("--timestep", type=float, default=0.001, help="ps")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--seed", type=int, default=0, help="REMD seed")
    p.add_argument("--platform", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--replicas", type=int, default=5)
    p.add_argument("--t-max", type=float, default=600.0)
    p.add_argument("--remd-steps", type=int, default=10_000_000)
    p.add_argument("--remd-interval", type=int, default=500)
    p.add_argument("--remd-equilibration", type=int, default=50_000)
    p.add_argument("--exchange-interval", type=int, default=250)
    p.add_argument("--remd-out", default=None)
    p.add_argument("--metad-steps", type=int, default=2_000_000, help="learning phase")
    p.add_argument("--metad-production-steps", type=int, default=4_000_000, help="bias frozen")
    p.add_argument("--bias-factor", type=float, default=6.0)
    p.add_argument("--metad-out", default=None, help="npz prefix for (phi, psi, log-weight)")
    p.add_argument(
        "--remd-in",
        action="append",
        default=None,
        help="--part remd-file: file to analyse; --part reweight: files (repeatable) whose "
        "frames are reweighted to --solvent",
    )
    args = p.parse_args()
    t0 = time.perf_counter()
    if args.part == "umbrella":
        for seed in args.seeds:
            run_umbrella(args, args.solvent, seed)
    elif args.part == "metad":
        for seed in args.seeds:
            run_metad(args, seed)
    elif args.part == "remd":
        run_remd(args)
    elif args.part == "reweight":
        reweight_remd_files(args)
    else:
        for path in args.remd_in:
            analyse_remd_file(path)
    emit(benchmark="adp_reference", part=args.part, total_wall_s=round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    main()
