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


def ramachandran(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    bins: int = 60,
) -> Path:
    """Side-by-side phi/psi histograms as free energies, one panel per entry.

    ``panels`` maps a title to ``(phi, psi, log_weights)``: angles (n,) in radians, log-weights
    (n,) or None for unweighted data (MD). Colour is -log p in kT, shifted to a minimum of 0.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    for ax, (title, (phi, psi, log_w)) in zip(axes[0], panels.items(), strict=True):
        hist, _, _ = np.histogram2d(
            phi, psi, bins=[edges, edges], weights=_weights(log_w, len(phi))
        )
        with np.errstate(divide="ignore"):
            f = -np.log(hist)
        f -= np.nanmin(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
        f[~np.isfinite(f)] = np.nan
        im = ax.pcolormesh(edges, edges, f.T, cmap="viridis", vmax=10)
        ax.set(title=title, xlabel=r"$\phi$ / rad", ylabel=r"$\psi$ / rad", aspect="equal")
        fig.colorbar(im, ax=ax, label="F / kT")
    return _save(fig, path)


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
