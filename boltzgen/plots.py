"""Diagnostic plots written to files (matplotlib, Agg backend; never opens a window).

Every function takes plain arrays (angles in radians, free energies in kT) and a path, writes
the figure and returns the path, so the CLI, the demo and the service share one implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _save_as_is(fig, path: str | Path) -> Path:
    """Save without tight_layout (a colour bar shared by several axes does not take it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _weights(log_w: np.ndarray | None, n: int) -> np.ndarray:
    if log_w is None:
        return np.full(n, 1.0 / n)
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = np.isfinite(log_w)
    w = np.zeros(n)
    if finite.any():
        w[finite] = np.exp(log_w[finite] - log_w[finite].max())
        w /= w.sum()
    return w


def dihedral_map(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    *,
    bins: int = 60,
    scale: float = 1.0,
    unit: str = "kT",
    vmax: float = 10.0,
    labels: tuple[str, str] = (r"$\phi$ / rad", r"$\psi$ / rad"),
    shared_colorbar: bool = False,
) -> Path:
    """Free-energy maps of two dihedrals on [-pi, pi]^2, one panel per entry.

    ``panels`` maps a title to ``(x, y, weights)``: angles (n,) in radians and relative weights
    (n,) >= 0, or None for unweighted frames. Colour is F = -scale * ln p (``scale`` = 1 for
    kT, kT in kcal/mol for kcal/mol), shifted to a minimum of 0 per panel, from 0 to ``vmax``;
    bins never visited are blank. One colour bar per panel, or one for all.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    edges = np.linspace(-np.pi, np.pi, int(bins) + 1)
    for ax, (title, (x, y, w)) in zip(axes[0], panels.items(), strict=True):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        ww = None if w is None else np.asarray(w, dtype=np.float64)[ok]
        hist, _, _ = np.histogram2d(x[ok], y[ok], bins=[edges, edges], weights=ww)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = -scale * np.log(hist / hist.sum())
        f[~np.isfinite(f)] = np.nan
        if np.isfinite(f).any():
            f -= np.nanmin(f)
        im = ax.pcolormesh(edges, edges, f.T, cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set(title=title, xlabel=labels[0], ylabel=labels[1], aspect="equal")
        if not shared_colorbar:
            fig.colorbar(im, ax=ax, label=f"F / {unit}")
    if shared_colorbar:
        fig.colorbar(im, ax=list(axes[0]), label=f"F / {unit}")
        return _save_as_is(fig, path)
    return _save(fig, path)


def ramachandran(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    bins: int = 60,
) -> Path:
    """Side-by-side phi/psi histograms as free energies in kT, one panel per entry.

    ``panels`` maps a title to ``(phi, psi, log_weights)``: angles (n,) in radians, log-weights
    (n,) or None for unweighted data (MD). Colour is -log p in kT, shifted to a minimum of 0.
    """
    weighted = {
        title: (phi, psi, None if log_w is None else _weights(log_w, len(phi)))
        for title, (phi, psi, log_w) in panels.items()
    }
    return dihedral_map(weighted, path, bins=bins)


def free_energy_profile(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    xlabel: str = r"$\phi$ / rad",
) -> Path:
    """Free-energy profiles F(cv) in kT with error bands; ``curves`` maps a label to
    ``(centers, F, F_err)`` (F_err may be None)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, (x, f, err) in curves.items():
        (line,) = ax.plot(x, f, label=label)
        if err is not None:
            ax.fill_between(x, f - err, f + err, color=line.get_color(), alpha=0.3, lw=0)
    ax.set(xlabel=xlabel, ylabel="F / kT")
    ax.legend()
    return _save(fig, path)


def log_weight_histogram(log_w: np.ndarray, path: str | Path, ess: float | None = None) -> Path:
    """Histogram of finite log importance weights, shifted so the maximum is 0."""
    log_w = np.asarray(log_w, dtype=np.float64)
    finite = log_w[np.isfinite(log_w)]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if finite.size:
        ax.hist(finite - finite.max(), bins=60)
    title = f"{finite.size}/{log_w.size} finite"
    if ess is not None:
        title += f", ESS = {100 * ess:.1f} %"
    ax.set(xlabel=r"$\log w - \max \log w$", ylabel="count", title=title)
    return _save(fig, path)


def training_curves(history: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Loss curves: ``history`` maps a name (e.g. 'train_nll', 'val_nll') to per-epoch values."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, values in history.items():
        if len(values):
            ax.plot(np.arange(1, len(values) + 1), values, label=name)
    ax.set(xlabel="epoch", ylabel="loss")
    ax.legend()
    return _save(fig, path)
