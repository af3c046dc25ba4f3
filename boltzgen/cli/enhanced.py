"""``boltzgen remd``, ``umbrella`` and ``metad``: enhanced-sampling data and reference free
energies."""

from __future__ import annotations

import json
import math
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


def remd_cmd(
    pdb: PdbOption = None,
    forcefield: ForceFieldOption = DEFAULT_FORCEFIELD,  # noqa: B006
    solvent: SolventOption = "vacuum",
    temperature: Annotated[float, typer.Option(help="Target (lowest) temperature, K.")] = 300.0,
    t_max: Annotated[float, typer.Option(help="Highest temperature, K.")] = 600.0,
    replicas: Annotated[int, typer.Option(help="Number of replicas (geometric ladder).")] = 5,
    steps: Annotated[int, typer.Option(help="Production steps per replica.")] = 1_000_000,
    equilibration: Annotated[int, typer.Option(help="Steps before recording.")] = 50_000,
    timestep: Annotated[float, typer.Option(help="Time step in ps.")] = 0.001,
    exchange_interval: Annotated[int, typer.Option(help="Steps between swap attempts.")] = 250,
    interval: Annotated[int, typer.Option(help="Record a frame every this many steps.")] = 500,
    out: Annotated[Path, typer.Option(help="Output HDF5 (same format as simulate).")] = Path(
        "remd.h5"
    ),
    seed: Annotated[int, typer.Option(help="Seed (velocities, noise, swaps).")] = 0,
    platform: Annotated[str, typer.Option(help="OpenMM platform or 'auto'.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU-platform threads per replica.")] = 1,
) -> None:
    """Temperature replica exchange; writes the target-temperature replica (positions,
    energies, forces) in the format of ``boltzgen simulate``."""
    from boltzgen.enhanced import geometric_temperatures, replica_exchange
    from boltzgen.simulation import LangevinConfig

    with bad_input_exits():
        system = system_from_options(pdb, forcefield, solvent, temperature)
        temps = geometric_temperatures(temperature, t_max, replicas)
        with step_progress("REMD", steps + equilibration) as progress:
            r = replica_exchange(
                system,
                temps,
                n_steps=steps,
                exchange_interval=exchange_interval,
                report_interval=interval,
                n_equilibration=equilibration,
                out=out,
                langevin=LangevinConfig(
                    timestep=timestep, seed=seed, platform=platform, threads=threads
                ),
                progress=progress,
            )
    acc = ", ".join(f"{a:.2f}" for a in r.acceptance)
    typer.echo(
        f"wrote {r.trajectory.n_frames} frames at {temperature:g} K to {out} "
        f"({r.wall_time:.0f} s; swap acceptance {acc})"
    )


def umbrella_cmd(
    pdb: PdbOption = None,
    forcefield: ForceFieldOption = DEFAULT_FORCEFIELD,  # noqa: B006
    solvent: SolventOption = "vacuum",
    temperature: Annotated[float, typer.Option(help="Temperature, K.")] = 300.0,
    dihedral: Annotated[
        str,
        typer.Option(
            help="phi, psi, omega, chi1, ... (first residue that has it), with a PDB residue "
            "number such as 'phi:2', or atom indices 'i,j,k,l'."
        ),
    ] = "phi",
    windows: Annotated[int, typer.Option(help="Windows evenly spaced over the circle.")] = 36,
    k: Annotated[float, typer.Option(help="Spring constant, kJ/mol/rad^2.")] = 200.0,
    steps: Annotated[int, typer.Option(help="Production steps per window.")] = 200_000,
    equilibration: Annotated[int, typer.Option(help="Steps per window before recording.")] = 20_000,
    timestep: Annotated[float, typer.Option(help="Time step in ps.")] = 0.001,
    state_a: Annotated[str, typer.Option(help="State A 'lo,hi' (rad).")] = "0,3.1416",
    state_b: Annotated[str, typer.Option(help="State B 'lo,hi' (rad).")] = "-3.1416,0",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    platform: Annotated[str, typer.Option(help="OpenMM platform or 'auto'.")] = "auto",
) -> None:
    """Umbrella sampling + MBAR along a dihedral; prints dF = F(A) - F(B) in kT as JSON."""
    import numpy as np

    from boltzgen import cv
    from boltzgen.enhanced import umbrella_sampling
    from boltzgen.simulation import LangevinConfig

    with bad_input_exits(ValueError):
        system = system_from_options(pdb, forcefield, solvent, temperature)
        name = [int(a) for a in dihedral.split(",")] if "," in dihedral else dihedral
        d = cv.dihedral(system, name)
        a = tuple(float(x) for x in state_a.split(","))
        b = tuple(float(x) for x in state_b.split(","))
        centers = np.linspace(-math.pi, math.pi, windows, endpoint=False)
        r = umbrella_sampling(
            system,
            d.atoms,
            centers,
            k=k,
            n_steps_per_window=steps,
            n_equilibration=equilibration,
            langevin=LangevinConfig(timestep=timestep, seed=seed, platform=platform),
        )
        df, err = r.free_energy_difference(a, b)
    typer.echo(json.dumps({"df_kT": df, "err_kT": err, "wall_s": r.wall_time, **r.settings}))


def metad_cmd(
    pdb: PdbOption = None,
    forcefield: ForceFieldOption = DEFAULT_FORCEFIELD,  # noqa: B006
    solvent: SolventOption = "vacuum",
    temperature: Annotated[float, typer.Option(help="Temperature, K.")] = 300.0,
    cv_names: Annotated[
        list[str] | None,
        typer.Option(
            "--cv",
            help="Dihedral to bias (repeatable, one to three): 'phi:2', 'psi:3', ... Default: "
            "every residue's state dihedral (phi; psi for proline) if there are at most three.",
        ),
    ] = None,
    metad_steps: Annotated[int, typer.Option(help="Steps of bias learning.")] = 1_000_000,
    steps: Annotated[int, typer.Option(help="Steps with the bias frozen (recorded).")] = 2_000_000,
    interval: Annotated[int, typer.Option(help="Record a frame every this many steps.")] = 250,
    bias_factor: Annotated[float, typer.Option(help="Well-tempered bias factor.")] = 6.0,
    out: Annotated[
        Path | None, typer.Option(help="npz with the CV values and log-weights per frame.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    platform: Annotated[str, typer.Option(help="OpenMM platform or 'auto'.")] = "auto",
) -> None:
    """Well-tempered metadynamics over one to three dihedrals, then sampling with the bias
    frozen and exact reweighting; prints dF = F(CV >= 0) - F(CV < 0) per CV in kT as JSON."""
    import numpy as np

    from boltzgen import cv
    from boltzgen.errors import InputError
    from boltzgen.metadynamics import metadynamics
    from boltzgen.simulation import LangevinConfig

    with bad_input_exits(ValueError):
        system = system_from_options(pdb, forcefield, solvent, temperature)
        if cv_names:
            cvs = [cv.dihedral(system, n) for n in cv_names]
        else:
            cvs = list(cv.state_dihedrals(system).values())
            if not 1 <= len(cvs) <= 3:
                raise InputError(
                    f"the molecule has {len(cvs)} backbone state dihedrals; name one to three "
                    "with --cv"
                )
        r = metadynamics(
            system,
            cvs,
            n_metadynamics_steps=metad_steps,
            n_steps=steps,
            report_interval=interval,
            bias_factor=bias_factor,
            langevin=LangevinConfig(seed=seed, platform=platform),
        )
        a, b = (0.0, math.pi + 1e-4), (-math.pi - 1e-4, 0.0)
        free = {}
        for i, c in enumerate(cvs):
            df, err = r.free_energy_difference(i, a, b)
            free[c.name] = {"df_kT": df, "err_kT": err}
    if out is not None:
        np.savez_compressed(out, cv=r.cv, names=np.array(r.names), log_weight=r.log_weights)
    typer.echo(
        json.dumps(
            {"free_energies": free, "ess": r.ess, "n_frames": len(r.bias), "wall_s": r.wall_time}
            | r.settings
        )
    )
