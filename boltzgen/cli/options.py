"""Command-line options shared by the commands that build a molecular system."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from boltzgen.constants import DEFAULT_FORCEFIELD as _DEFAULT_FORCEFIELD

PdbOption = Annotated[
    Path | None, typer.Option(help="PDB file with hydrogens (default: shipped alanine dipeptide).")
]
ForceFieldOption = Annotated[
    list[str], typer.Option(help="OpenMM force-field XML file(s); repeat for several.")
]
SolventOption = Annotated[str, typer.Option(help="vacuum, obc2, obc1, gbn, gbn2 or hct.")]
DEFAULT_FORCEFIELD = list(_DEFAULT_FORCEFIELD)


def system_from_options(
    pdb: Path | None,
    forcefield: list[str],
    solvent: str,
    temperature: float,
    constraints: str | None = None,
):
    """The System the options describe (shipped alanine dipeptide when no PDB is given)."""
    from boltzgen.systems import System

    if pdb is None:
        return System.alanine_dipeptide(solvent, temperature, constraints)
    return System.from_pdb(pdb, tuple(forcefield), solvent, temperature, constraints)


def fmt(value: float | None, spec: str = ".2f") -> str:
    """A number for the terminal, or ``n/a`` for None (JSON's non-finite) and inf / nan."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


@contextmanager
def bad_input_exits(*also: type[Exception]) -> Iterator[None]:
    """Bad input ends the command: a ``BoltzgenError`` (or one of ``also``) is printed as
    ``error: ...`` on stderr and the exit code is 2."""
    from boltzgen.errors import BoltzgenError

    try:
        yield
    except (BoltzgenError, *also) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _bar(label: str, *columns):
    from rich.progress import BarColumn, Progress, TextColumn

    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), *columns)


@contextmanager
def step_progress(label: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A rich bar of MD steps (done / total, time remaining); yields the library's
    ``progress(done, total)`` callback."""
    from rich.progress import TextColumn, TimeRemainingColumn

    with _bar(
        label, TextColumn("{task.completed:,}/{task.total:,} steps"), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextmanager
def fraction_progress(
    label: str, width: int | None = None
) -> Iterator[Callable[[float, str], None]]:
    """A rich bar of a fraction done and the stage's message (cut to ``width``); yields the
    library's ``progress(fraction, message)`` callback (training, sampling, refinement)."""
    from rich.progress import TextColumn, TimeElapsedColumn

    with _bar(
        label, TextColumn("{task.percentage:>3.0f}% {task.description}"), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("", total=1.0)
        yield lambda f, msg: bar.update(task, completed=f, description=msg[:width])


@contextmanager
def no_progress() -> Iterator[Callable[..., None]]:
    """No bar (a worker process beside one that draws its own): a ``progress`` callback that
    does nothing."""
    yield lambda *_args: None
