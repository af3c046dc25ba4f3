"""Free-energy surfaces of two CG dihedrals, reference and model side by side (to a file),
drawn by the library's :func:`boltzgen.plots.dihedral_map` in kcal/mol."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from boltzgen.cg.metrics import BINS, KCAL
from boltzgen.constants import GAS_CONSTANT
from boltzgen.plots import dihedral_map

__all__ = ["fes_plot"]


def fes_plot(
    panels: Mapping[str, Any],
    path: str | Path,
    temperature: float = 300.0,
    *,
    bins: int = BINS,
    vmax: float = 6.0,
    labels: tuple[str, str] = (r"$\phi$ / rad", r"$\psi$ / rad"),
) -> Path:
    """One panel per entry of ``panels`` (title -> (N, 2) dihedral values in radians, or a
    pair (values, weights (N,)) for weighted frames, e.g. a metadynamics reference):
    F = -kT ln p in kcal/mol on the 60 x 60 grid, shifted to a minimum of 0, same colour
    scale (0..``vmax``) in every panel; bins never visited are blank."""
    kt = GAS_CONSTANT * float(temperature) / KCAL
    maps = {}
    for title, angles in panels.items():
        values, weights = angles if isinstance(angles, tuple) else (angles, None)
        values = np.asarray(values, dtype=np.float64)
        maps[title] = (values[:, 0], values[:, 1], weights)
    return dihedral_map(
        maps,
        path,
        bins=bins,
        scale=kt,
        unit="kcal mol$^{-1}$",
        vmax=vmax,
        labels=labels,
        shared_colorbar=True,
    )
