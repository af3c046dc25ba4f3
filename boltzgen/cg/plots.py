"""Free-energy surfaces of two CG dihedrals, reference and model side by side (to a file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from boltzgen.cg.metrics import BINS, KCAL, dihedral_histogram  # noqa: E402

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
    from boltzgen.constants import GAS_CONSTANT

    kt = GAS_CONSTANT * float(temperature) / KCAL
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    im = None
    for ax, (title, angles) in zip(axes[0], panels.items(), strict=True):
        values, weights = angles if isinstance(angles, tuple) else (angles, None)
        p = dihedral_histogram(values, bins, weights)
        with np.errstate(divide="ignore"):
            f = -kt * np.log(p)
        f[~np.isfinite(f)] = np.nan
        f -= np.nanmin(f)
        im = ax.pcolormesh(edges, edges, f.T, cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set(title=title, xlabel=labels[0], ylabel=labels[1], aspect="equal")
    fig.colorbar(im, ax=list(axes[0]), label="F / kcal mol$^{-1}$")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
