"""``boltzgen simulate``: Langevin MD to an mdtraj HDF5 file with energies and forces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from boltzgen.cli.options import (
    DEFAULT_FORCEFIELD,
    ForceFieldOption,
    PdbOption,
    SolventOption,
    bad_input_exits,
    step_progress,
    system_from_options,
)


def simulate_cmd(
    pdb: PdbOption = None,
    forcefield: ForceFieldOption = DEFAULT_FORCEFIELD,  # noqa: B006
    solvent: SolventOption = "vacuum",
    temperature: Annotated[float, typer.Option(help="Temperature in K.")] = 300.0,
    steps: Annotated[int, typer.Option(help="Number of integration steps.")] = 10_000,
    timestep: Annotated[float, typer.Option(help="Time step in ps.")] = 0.001,
    interval: Annotated[int, typer.Option(help="Write a frame every this many steps.")] = 100,
    out: Annotated[Path, typer.Option(help="Output HDF5 file (mdtraj format + forces).")] = Path(
        "md.h5"
    ),
    seed: Annotated[int, typer.Option(help="Seed for velocities and the Langevin noise.")] = 0,
    platform: Annotated[
        str,
        typer.Option(
            help="OpenMM platform name or 'auto' (the fastest for the system, as the generator "
            "picks it: Reference for small vacuum molecules, else CUDA > CPU > Reference)."
        ),
    ] = "auto",
    friction: Annotated[float, typer.Option(help="Langevin friction in 1/ps.")] = 1.0,
    constraints: Annotated[
        str | None, typer.Option(help="None (default), hbonds, allbonds or hangles.")
    ] = None,
    minimize: Annotated[bool, typer.Option(help="Minimise the energy first.")] = True,
) -> None:
    """Run Langevin MD and write positions, potential energies and forces to one HDF5 file."""
    from boltzgen.md import SIMULATE_DEFAULTS, simulate

    with bad_input_exits():
        system = system_from_options(pdb, forcefield, solvent, temperature, constraints)
        langevin = SIMULATE_DEFAULTS.replace(
            timestep=timestep, friction=friction, seed=seed, platform=platform
        )
        with step_progress("MD", steps) as progress:
            traj = simulate(
                system,
                n_steps=steps,
                report_interval=interval,
                out=out,
                minimize=minimize,
                langevin=langevin,
                progress=progress,
            )
    typer.echo(f"wrote {traj.n_frames} frames ({system.n_atoms} atoms) to {out}")
