"""``boltzgen demo``: a small end-to-end run on alanine dipeptide. Independent flows train,
sample and refine side by side, one per core (flow 1 in this process, the others in spawned
worker processes), so on 2 cores each of two flows gets the whole training and refinement
time instead of half of it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from boltzgen.cli.generator import _refine
from boltzgen.cli.options import fmt, fraction_progress, no_progress
from boltzgen.processes import call_result, kill_workers, spawn_call

_DEMO_DATA = "adp-vacuum-remd.h5"  # 300 K replica of REMD: phi > 0 in proportion


def demo_cmd(
    out: Annotated[Path, typer.Option(help="Output directory for model, samples, plots.")] = Path(
        "demo-out"
    ),
    data: Annotated[
        Path | None, typer.Option(help="MD data (default: shipped ADP vacuum REMD set).")
    ] = None,
    minutes: Annotated[float, typer.Option(help="Training time budget in minutes.")] = 3.0,
    n: Annotated[int, typer.Option("-n", help="Number of samples per flow.")] = 20_000,
    refine_seconds: Annotated[
        float, typer.Option(help="Time for stratified refinement, s (0: no refinement).")
    ] = 60.0,
    flow: Annotated[str, typer.Option(help="smooth or spline.")] = "smooth",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    flows: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="Independently trained flows; dF is their mean with an error that includes "
            "their spread, with a verdict. They run side by side, one per core: each gets the "
            "training and refinement time divided by the rounds ceil(flows / cores).",
        ),
    ] = 2,
    cores: Annotated[
        int | None,
        typer.Option(min=1, help="CPU cores for the flows (default: every core available)."),
    ] = None,
) -> None:
    """Small end-to-end run on alanine dipeptide: train independent flows (phi > 0 frames
    given a 5 % share), sample, refine by backbone state, free energies with a verdict
    (reliable or not converged, with reasons), plots."""
    from boltzgen.cores import resolve_cores, torch_threads
    from boltzgen.paths import data_file

    lanes = min(resolve_cores(cores), flows)
    with torch_threads(1):  # as boltzgen run: a second thread slowed these small flows
        _demo(
            data or data_file(_DEMO_DATA), out, flow, minutes, n, refine_seconds, flows, seed, lanes
        )


def _demo(
    path: Path,
    out: Path,
    flow: str,
    minutes: float,
    n: int,
    refine_seconds: float,
    flows: int,
    seed: int,
    lanes: int = 1,
) -> None:
    """Flows k = lanes * r + lane run in round r of lane ``lane``; lane 0 is this process."""
    from boltzgen.md import load_md

    md = load_md(path)
    system = md.system()
    typer.echo(f"data: {path} ({md.trajectory.n_frames} frames, {system.n_atoms} atoms)")
    rounds = math.ceil(flows / lanes)
    if lanes > 1:
        typer.echo(f"{flows} flows side by side on {lanes} cores, {rounds} round(s)")
    jobs = {}
    for k in range(flows):  # flow 1 writes into out/, the others into out/flow<k>/
        where = out if k == 0 else out / f"flow{k + 1}"
        label = f"flow {k + 1}/{flows}" if flows > 1 else "flow"
        opts = {"flow": flow, "seed": seed + 7919 * k, "label": label}
        jobs[k] = (where, minutes / rounds, n, refine_seconds / rounds, opts)
    runs: dict[int, dict[str, Any]] = {}
    lane_flows = {lane: [k for k in jobs if k % lanes == lane] for lane in range(1, lanes)}
    workers = {
        lane: spawn_call(_lane, path, [jobs[k] for k in ks]) for lane, ks in lane_flows.items()
    }
    try:
        for k in (k for k in jobs if k % lanes == 0):
            runs[k] = _demo_flow(system, md, *jobs[k])
        for lane, worker in workers.items():
            status, value = call_result(*worker)
            if status != "ok":
                which = ", ".join(str(k + 1) for k in lane_flows[lane])
                typer.echo(f"the worker training flow(s) {which} failed: {value}", err=True)
                raise typer.Exit(1)
            for k, done in zip(lane_flows[lane], value, strict=True):
                for line in done.pop("lines"):
                    typer.echo(line)
                runs[k] = done
    finally:  # an interrupted or failed demo does not wait for its workers
        kill_workers(list(workers.values()))
    _demo_verdict(system, md, [runs[k] for k in sorted(runs)], seed)
    typer.echo(
        "reference (twelve 2-D metadynamics walkers, benchmarks/RESULTS.md): 3.61 +- 0.05 kT"
    )
    typer.echo(f"plots and files in {out}/")


def _lane(path: Path, jobs: list[tuple]) -> list[dict[str, Any]]:
    """A worker process's flows of the demo, one after another, without bars (the MD file read
    once): each flow's dF and error, and the lines it would have printed (printed by the
    demo's process, in order)."""
    from boltzgen.cores import torch_threads
    from boltzgen.md import load_md

    done = []
    with torch_threads(1):
        md = load_md(path)
        system = md.system()
        for out, minutes, n, refine_seconds, opts in jobs:
            lines: list[str] = []
            run = _demo_flow(
                system, md, out, minutes, n, refine_seconds, opts, say=lines.append, bars=False
            )
            done.append({"df": run["df"], "err": run["err"], "lines": lines})
    return done


def _demo_flow(
    system: Any,
    md: Any,
    out: Path,
    minutes: float,
    n: int,
    refine_seconds: float,
    opts: dict[str, Any],
    say=typer.echo,
    bars: bool = True,
) -> dict[str, Any]:
    """One independently trained flow of the demo: trained, sampled, refined; its dF(phi:2)
    (from the strata after refinement) and the samples it was computed from. ``say`` prints;
    ``bars``: progress bars (a worker process has none)."""
    import warnings

    from boltzgen.generator.config import BalanceConfig, flow_size
    from boltzgen.generator.workflow import free_energy_report, sample_to_files, train_model
    from boltzgen.pipeline.training import likelihood_config

    seed, label = opts["seed"], opts["label"]
    with fraction_progress(f"train {label}") if bars else no_progress() as progress:
        gen, ts = train_model(
            system,
            md,
            out,
            architecture={"flow": opts["flow"], "seed": seed},
            # boltzgen run's likelihood training: plateau schedule, then the finish
            train=likelihood_config(flow_size(3 * system.n_atoms - 6)["lr"], 60 * minutes, seed),
            progress=progress,
            balance=BalanceConfig(),
        )
    say(
        f"{label}: trained {ts['epochs_run']} epochs in {ts['wall_time_s']:.0f} s, "
        f"best validation NLL {ts['best_val_nll']:.2f}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # clashing draws are counted in the verdict instead
        samples, ss = sample_to_files(gen, n, out, seed=seed, reference=md.trajectory.xyz)
    fe = free_energy_report(samples, system, out, cv="phi", seed=seed, reference=md.trajectory)
    say(
        f"{label}: ESS {100 * ss['ess']:.2f} % of {ss['n_samples']} samples, "
        f"dF = F(phi > 0) - F(phi < 0) = {fmt(fe['df_kT'])} +- {fmt(fe['df_err_kT'])} kT"
    )
    run = {"samples": samples, "final": samples, "df": fe["df_kT"], "err": fe["df_err_kT"]}
    if refine_seconds > 0:

        def labelled(line: str) -> None:
            say(f"{label}: {line}")

        refined, rs = _refine(gen, samples, out, refine_seconds, seed, labelled, bars)
        fe_r = rs["free_energies"]["phi:2"]
        say(f"{label}: dF = {fmt(fe_r['df_kT'])} +- {fmt(fe_r['err_kT'])} kT (refined)")
        run.update(final=refined, df=fe_r["df_kT"], err=fe_r["err_kT"])
    return run


def _demo_verdict(system: Any, md: Any, runs: list[dict[str, Any]], seed: int) -> None:
    """The demo's number (the flows' mean, error max(stated, spread)) and its verdict from the
    first flow's weights per backbone state, the data's states and dF, the clash fraction and
    the flows' agreement: what ``boltzgen run`` judges."""
    import numpy as np

    from boltzgen.analysis import free_energy_difference
    from boltzgen.cv import backbone_dihedrals, backbone_state_labels
    from boltzgen.diagnostics import combine_estimates, diagnose, verdict
    from boltzgen.samples import clash_fraction

    values = [float(r["df"]) for r in runs]
    errors = [float(r["err"]) for r in runs]
    finite = all(math.isfinite(x) for x in values + errors)
    value, error = values[0], errors[0]
    if len(runs) > 1 and finite:
        c = combine_estimates(values, errors)
        value, error = c.value, c.error
    data = md.trajectory.xyz
    phi = backbone_dihedrals(system)["phi:2"]
    dd, de = free_energy_difference(
        data, phi, (0.0, math.pi), (-math.pi, 0.0), seed=seed, block_size=max(1, len(data) // 50)
    )
    final = runs[0]["final"]
    each = ", ".join(f"{fmt(x)} +- {fmt(e)}" for x, e in zip(values, errors, strict=True))
    how = f" (mean of {len(runs)} independent flows: {each})" if len(runs) > 1 else ""
    if not np.isfinite(final.log_weights).any() or not math.isfinite(value):
        typer.echo(f"dF = {fmt(value)} kT{how}: not converged")
        typer.echo("  because no finite estimate: the flow's samples carry no weight there")
        return
    d = diagnose(
        final.log_weights,
        value,
        error,
        labels=backbone_state_labels(system, final.positions)[0],
        data_labels=backbone_state_labels(system, data)[0],
        data_estimate=(dd, de) if math.isfinite(dd) and math.isfinite(de) else None,
        independent=(values, errors) if len(runs) > 1 and finite else None,
        clash_fraction=clash_fraction(runs[0]["samples"], system.topology)["clash_fraction"],
    )
    v = verdict(d)
    typer.echo(f"dF = {fmt(value)} +- {fmt(error)} kT{how}: {v.status}")
    for reason in v.reasons:
        typer.echo(f"  because {reason}")
    for advice in v.advice:
        typer.echo(f"  to do: {advice}")
