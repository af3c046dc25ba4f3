"""``boltzgen cg train | simulate``: coarse-grained force fields by flow matching."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from boltzgen.cli.options import bad_input_exits, fmt

app = typer.Typer(
    help="Coarse-grained force fields: flow matching (or classical force matching), CG MD, "
    "scores against the all-atom free-energy surface.",
    no_args_is_help=True,
)

_SET_HELP = "A CGConfig option as key=value (repeatable; values are JSON, e.g. hidden=[64,64])."


def _config(options: list[str] | None, config_file: Path | None, **typed: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    if config_file is not None:
        cfg.update(json.loads(config_file.read_text()))
    cfg.update({k: v for k, v in typed.items() if v is not None})
    for item in options or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        try:
            cfg[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key.strip()] = value
    return cfg


def _mapping(system, beads: str | None, **kwargs):
    from boltzgen.cg import Mapping

    if beads is not None and all(p.strip().isdigit() for p in beads.split(",")):
        return Mapping.select(system, [int(p) for p in beads.split(",")], **kwargs)
    return Mapping.select(system, beads, **kwargs)


def _training_data(data: Path, beads: str | None, temperature: float):
    """(frames, mapping): an MD file (system and temperature from the file), or weighted
    samples (refined.h5 / samples.h5 of ``boltzgen run``: the mapping from the file's
    topology at ``temperature``, no constraints: CG masses are the bead atoms' own)."""
    import mdtraj

    from boltzgen.cg.frames import is_samples_file
    from boltzgen.md import load_md

    if is_samples_file(data):
        return data, _mapping(
            mdtraj.load_frame(str(data), 0).topology, beads, temperature=temperature
        )
    md = load_md(data)
    return md, _mapping(md.system(), beads)


def _echo_scores(summary: dict[str, Any], out: Path) -> None:
    m = summary["metrics"]
    typer.echo(
        f"KL {fmt(m.get('kl'), '.3f')}, PMF MSE {fmt(m.get('pmf_mse_kcal2'), '.3f')} "
        f"(kcal/mol)^2, unreached reference mass {fmt(m.get('unreached_mass'), '.4f')}, "
        f"dF(basin >= 0 - basin < 0) model {fmt(m.get('df_model_kT'))} vs reference "
        f"{fmt(m.get('df_reference_kT'))} kT"
    )
    md = summary["md"]
    if md.get("basin"):
        b = md["basin"]
        typer.echo(
            f"CG MD basin {b['dihedral']} >= 0: {100 * b['share']:.2f} % of frames, "
            f"{b['transitions']} transitions ({b['walkers_crossing']} walkers crossed)"
        )
    typer.echo(
        f"CG MD: {md['n_walkers']} walkers x {md['n_steps']:,} steps in {md['time_s']:.0f} s "
        f"({md.get('frames_per_s', 0):,.0f} frames/s); files in {out}/"
    )


def _run(fn, *args, **kwargs):
    with bad_input_exits():
        return fn(*args, **kwargs)


@app.command("train")
def train_cmd(
    data: Annotated[
        Path,
        typer.Argument(
            help="All-atom MD HDF5 (boltzgen simulate/remd) or weighted samples (refined.h5 "
            "or samples.h5 of boltzgen run / sample: the log-weights weigh the frames)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("cg-out"),
    method: Annotated[str, typer.Option(help="flow (flow matching) or forces.")] = "flow",
    beads: Annotated[
        str | None, typer.Option(help="mdtraj selection or indices a,b,c; default backbone.")
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="All-atom frames to score against (default: data).")
    ] = None,
    state_shares_from: Annotated[
        Path | None,
        typer.Option(
            help="Weighted all-atom samples (samples.h5 of a refined boltzgen run) whose "
            "backbone-state shares the frames are reweighted to: basin shapes from the frames, "
            "the balance between basins from the samples."
        ),
    ] = None,
    max_frames: Annotated[int | None, typer.Option(help="Use this many frames.")] = None,
    n_walkers: Annotated[int | None, typer.Option(help="CG MD walkers.")] = None,
    n_steps: Annotated[int | None, typer.Option(help="CG MD steps per walker.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    temperature: Annotated[
        float, typer.Option(help="K, for samples files (MD files carry their own).")
    ] = 300.0,
    config: Annotated[Path | None, typer.Option(help="CGConfig options as a JSON file.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
) -> None:
    """Map MD frames to beads, train the teacher flow and the CG force field, run CG MD and
    score it: forcefield.pt, cg_traj.h5, metrics.json, fes.png, summary.json in --out."""
    import torch

    from boltzgen.cg import train_and_simulate

    torch.set_num_threads(threads)
    cfg = _config(
        set_,
        config,
        method=method,
        max_frames=max_frames,
        n_walkers=n_walkers,
        n_steps=n_steps,
        seed=seed,
    )
    frames, mapping = _run(_training_data, data, beads, temperature)
    typer.echo(f"{mapping.n_beads} beads: atoms {mapping.atoms.tolist()}")
    summary = _run(
        train_and_simulate,
        frames,
        mapping,
        out,
        cfg,
        reference=reference,
        state_shares=state_shares_from,
    )
    if summary.get("state_shares"):
        sh = summary["state_shares"]
        typer.echo(f"state shares: frames {sh['data']} -> reweighted {sh['target']}")
    _echo_scores(summary, out)


@app.command("simulate")
def simulate_cmd(
    forcefield: Annotated[Path, typer.Argument(help="forcefield.pt from `boltzgen cg train`.")],
    data: Annotated[Path, typer.Argument(help="All-atom MD HDF5: start frames and reference.")],
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("cg-sim"),
    beads: Annotated[str | None, typer.Option(help="As for train (must match).")] = None,
    reference: Annotated[Path | None, typer.Option(help="Frames to score against.")] = None,
    n_walkers: Annotated[int | None, typer.Option(help="CG MD walkers.")] = None,
    n_steps: Annotated[int | None, typer.Option(help="CG MD steps per walker.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 1,
) -> None:
    """CG Langevin MD with a trained force field, scored against the all-atom FES."""
    import torch

    from boltzgen.cg import run_simulation
    from boltzgen.md import load_md

    torch.set_num_threads(threads)
    cfg = _config(set_, None, n_walkers=n_walkers, n_steps=n_steps, seed=seed)
    md = _run(load_md, data)
    mapping = _run(_mapping, md.system(), beads)
    summary = _run(run_simulation, forcefield, md, mapping, out, cfg, reference=reference)
    _echo_scores(summary, out)
