"""``boltzgen run PDB``: the whole pipeline (data, training, sampling, refinement, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from boltzgen.cli.options import fmt
from boltzgen.errors import BoltzgenError
from boltzgen.pipeline.config import STAGES, PipelineConfig, budget_split, parse_duration
from boltzgen.pipeline.report import leftover_line


def _default(name: str):
    return PipelineConfig.model_fields[name].get_default(call_default_factory=True)


def run_cmd(
    pdb: Annotated[Path, typer.Argument(help="PDB file of the molecule, with hydrogens.")],
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: run-<pdb name>).")
    ] = None,
    budget: Annotated[
        str, typer.Option(help="Wall-clock budget of the whole run, e.g. 90s, 60m, 1.5h.")
    ] = f"{_default('budget_minutes'):g}m",
    solvent: Annotated[str, typer.Option(help="vacuum, obc2, obc1, gbn, gbn2 or hct.")] = _default(
        "solvent"
    ),
    temperature: Annotated[float, typer.Option(help="Temperature, K.")] = _default("temperature"),
    forcefield: Annotated[
        list[str] | None,
        typer.Option(help="OpenMM force-field XML (repeatable); default amber99sbildn.xml."),
    ] = None,
    cv: Annotated[
        list[str] | None,
        typer.Option(
            help="Report dF(CV >= 0 vs < 0) for this backbone dihedral, e.g. phi:2 or psi:3 "
            "(repeatable; 'phi' = every residue). Default: every residue's phi (psi for "
            "proline)."
        ),
    ] = None,
    n_samples: Annotated[
        int | None, typer.Option(help="Flow samples (default: what the budget pays for).")
    ] = None,
    refine: Annotated[
        bool, typer.Option(help="Refine the samples by annealed SMC toward the Boltzmann target.")
    ] = _default("refine"),
    sampler: Annotated[
        str,
        typer.Option(
            help="Training data: remd (replica exchange), metad (metadynamics over the state "
            "dihedrals, bias frozen, exact weights) or auto (remd)."
        ),
    ] = _default("sampler"),
    seed: Annotated[int, typer.Option(help="Seed of the data, flow and sampling.")] = 0,
    flows: Annotated[
        int,
        typer.Option(
            help="Independently trained flows (each 1/n of the training and sampling time); "
            "every dF is their mean with an error that includes their spread."
        ),
    ] = _default("n_flows"),
    platform: Annotated[str, typer.Option(help="OpenMM platform (auto picks the fastest).")] = (
        _default("platform")
    ),
    cores: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU cores to use (default: every core this process may run on): REMD "
            "replicas and energy evaluations run in up to that many processes (each only "
            "when timed faster than one).",
        ),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="torch threads. 1 by default: the flows' small matrices gained nothing from "
            "a second thread, and on a busy machine 2 threads made training 1.4-36x slower.",
        ),
    ] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """From a PDB to reweighted samples and free energies: enhanced-sampling data over every
    backbone state (replica exchange or metadynamics), a flow sized from the molecule,
    training within the budget, sampling, refinement, and a report (report.md, summary.json, model.pt, samples.h5, plots/).

    Rerunning with the same options resumes after the last finished stage."""
    from boltzgen.cores import resolve_cores, torch_threads

    out = out or Path(f"run-{pdb.stem}")
    try:
        if not pdb.is_file():
            raise BoltzgenError(f"no such PDB file: {pdb}")
        fields = dict(
            budget_minutes=parse_duration(budget) / 60.0,
            solvent=solvent,
            temperature=temperature,
            n_samples=n_samples,
            refine=refine,
            sampler=sampler,
            seed=seed,
            n_flows=flows,
            platform=platform,
            cores=cores,
        )
        if forcefield:
            fields["forcefield"] = tuple(forcefield)
        if cv:
            fields["cvs"] = tuple(cv)
        try:
            config = PipelineConfig(**fields)
        except ValueError as exc:  # pydantic's ValidationError
            raise BoltzgenError(str(exc)) from None
        split = budget_split(config)
        n_cores = resolve_cores(config.cores)
        typer.echo(
            "budget "
            + ", ".join(f"{k} {v['seconds']:.0f} s ({v['share']:.0%})" for k, v in split.items())
            + f"; {n_cores} core{'s' if n_cores > 1 else ''}"
        )
        with torch_threads(threads):
            summary = _run(pdb, out, config, quiet)
    except BoltzgenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    _print_summary(summary, out)


def _run(pdb: Path, out: Path, config: PipelineConfig, quiet: bool) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from boltzgen.pipeline.run import run_pipeline  # here: it loads torch and OpenMM

    if quiet:
        return run_pipeline(pdb, out, config)

    with Progress(
        TextColumn("[bold]{task.fields[stage]:<9}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% {task.description}"),
        TimeElapsedColumn(),
    ) as bars:
        tasks = {s: bars.add_task("", total=1.0, stage=s, start=False) for s in STAGES}

        def on_stage(stage: str, fraction: float, message: str) -> None:
            task = tasks[stage]
            bars.start_task(task)
            bars.update(task, completed=fraction, description=message[:60])

        return run_pipeline(pdb, out, config, stage_progress=on_stage)


def _print_summary(s: dict, out: Path) -> None:
    ref = s.get("refine", {})
    line = f"ESS {100 * (s['ess'] or 0):.2f} % of {s['n_samples']:,} samples"
    if ref.get("status") == "done":
        line += (
            f" (flow alone {100 * (ref.get('ess_before') or 0):.2f} %; refinement spent "
            f"{ref['n_energy_evals']:,} energy evaluations)"
        )
    typer.echo(line)
    if (left := leftover_line(s.get("leftover_spent") or {})) is not None:
        typer.echo(left.replace("`", ""))
    for name, row in s["free_energies"].items():
        typer.echo(
            f"dF {name} = {fmt(row['df_kT'])} +- {fmt(row['err_kT'])} kT "
            f"(training data {fmt(row['df_data_kT'])} +- {fmt(row['err_data_kT'])}): "
            f"{row.get('verdict', '?')}"
        )
        for reason in row.get("reasons", []):
            typer.echo(f"  because {reason}")
        for advice in row.get("advice", []):
            typer.echo(f"  to do: {advice}")
        rec = row.get("recommended") or {}
        if rec.get("source") == "data":
            typer.echo(
                f"  quote the training data's {fmt(rec['df_kT'])} +- {fmt(rec['err_kT'])} kT: "
                f"{rec['why']}"
            )
    typer.echo(f"clash fraction {fmt(s['clash_fraction'], '.4f')}")
    bad = {k: v for k, v in (s.get("invalid_configurations") or {}).items() if v["n_invalid"]}
    if bad:
        typer.echo(
            "invalid configurations (clashes, non-finite energies), energy evaluations per "
            "stage: "
            + ", ".join(
                f"{k} {v['n_invalid']:,} of {v['n_evaluated']:,} ({100 * v['fraction']:.1f} %)"
                for k, v in bad.items()
            )
            + f"; each batch in {out / 'run.log'}"
        )
    typer.echo(
        "wall time "
        + ", ".join(f"{k} {v:.0f} s" for k, v in s["wall_time_s"].items() if v is not None)
    )
    for w in s.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"report: {out / 'report.md'}")
