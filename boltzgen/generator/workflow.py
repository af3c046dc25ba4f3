"""End-to-end steps shared by the CLI, the demo and the service's job kinds.

Each step takes plain arguments, writes its files into an output directory and returns a
JSON-able summary, so the science is written once and every front end reports the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from boltzgen import plots
from boltzgen.errors import InputError
from boltzgen.generator.config import BalanceConfig, FlowConfig, TrainConfig, make_config
from boltzgen.generator.training import finish_record, held_out_val_nll

ProgressFn = Callable[[float, str], None]


def _noop(fraction: float, message: str) -> None:  # pragma: no cover - default callback
    pass


def train_model(
    system,
    data,
    outdir: str | Path,
    *,
    architecture: FlowConfig | dict[str, Any] | None = None,
    train: TrainConfig | dict[str, Any] | None = None,
    checkpoint: str | Path | None = None,
    progress: ProgressFn = _noop,
    balance: BalanceConfig | dict[str, Any] | None = None,
):
    """Build and train a generator on ``data``; writes ``model.pt``, ``history.json`` and
    ``training.png`` into ``outdir``. Returns (generator, summary).

    architecture, train: :class:`FlowConfig` and :class:`TrainConfig` (or dicts of their
    fields). balance: a :class:`BalanceConfig` (e.g. ``{"cv": "phi", "states": [(0, pi)],
    "shares": [0.05]}``) weights the frames so each state of the named CV gets its share of
    the minibatch draws (:func:`~boltzgen.generator.data.state_weights`): a proposal that
    covers a basin the MD data under-sample. The importance weights remove the bias.
    """
    from boltzgen.generator.data import TrainingData, as_training_data, state_weights
    from boltzgen.generator.model import BoltzmannGenerator

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    arch = make_config(FlowConfig, architecture)
    train_cfg = make_config(TrainConfig, train)
    bal = make_config(BalanceConfig, balance) if balance else None
    td = as_training_data(data, system.n_atoms) if data is not None else None
    if bal is not None:
        if td is None:
            raise InputError("balance weights frames: it needs training data")
        from boltzgen import cv

        values = cv.dihedral(system, bal.cv)(td.positions)
        weights = state_weights(values, bal.states, bal.shares)
        td = TrainingData(td.positions, td.forces, weights)
    gen = BoltzmannGenerator.build(system, data=td, config=arch)
    t0 = time.perf_counter()

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "epoch":
            progress(
                0.99 * event["progress"],
                f"epoch {event['epoch']}/{event['epochs']} loss {event['train_loss']:.3f}"
                + (f" val_nll {event['val_nll']:.3f}" if math.isfinite(event["val_nll"]) else ""),
            )

    history = gen.fit(td, config=train_cfg, callbacks=[on_event], checkpoint=checkpoint)
    gen.save(outdir / "model.pt")
    (outdir / "history.json").write_text(json.dumps(history))
    curves = {k: v for k, v in history.items() if k in ("train_loss", "val_nll")}
    plots.training_curves(curves, outdir / "training.png")
    val = held_out_val_nll(history)
    summary = {
        "model_file": "model.pt",
        "flow": arch.flow,
        "n_parameters": int(sum(p.numel() for p in gen.parameters())),
        "n_frames": len(td) if td is not None else 0,
        "balance": bal.model_dump(mode="json") if bal is not None else None,
        "epochs_run": len(history["train_loss"]),
        "stop_reason": history["stop_reason"][0],
        "best_val_nll": min(val) if val else None,
        "finish": finish_record(history),
        "final_train_loss": history["train_loss"][-1],
        "wall_time_s": time.perf_counter() - t0,
    }
    progress(1.0, "trained")
    return gen, summary


def named_cvs(system) -> dict[str, Any]:
    """The backbone dihedral CVs (phi, psi) of the first residue that has them, if any."""
    from boltzgen import cv

    out = {}
    for name in ("phi", "psi"):
        with contextlib.suppress(InputError):
            out[name] = cv.dihedral(system, name)
    return out


def sample_to_files(
    gen,
    n_samples: int,
    outdir: str | Path,
    *,
    batch_size: int = 4096,
    seed: int = 0,
    reference=None,
    progress: ProgressFn = _noop,
):
    """Draw weighted samples; writes ``samples.h5`` (mdtraj HDF5 + log-weights, log q, reduced
    energies), ``samples.npz``, ``log_weights.png`` and, for molecules with phi/psi,
    ``ramachandran.png`` (beside ``reference`` positions if given). Returns (samples, summary)."""
    import torch

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    parts = []
    for start in range(0, n_samples, batch_size):
        m = min(batch_size, n_samples - start)
        parts.append(gen.sample(m, batch_size=m))
        progress(0.9 * (start + m) / n_samples, f"{start + m}/{n_samples} samples")
    samples = type(parts[0]).concatenate(parts) if len(parts) > 1 else parts[0]
    samples.save(outdir / "samples.h5")
    np.savez_compressed(
        outdir / "samples.npz",
        positions=samples.positions,
        log_q=samples.log_q,
        reduced_energy=samples.reduced_energy,
        log_weights=samples.log_weights,
    )
    plots.log_weight_histogram(samples.log_weights, outdir / "log_weights.png", ess=samples.ess)
    cvs = named_cvs(gen.system)
    if {"phi", "psi"} <= cvs.keys():
        panels = {}
        if reference is not None:
            panels["MD data"] = (cvs["phi"](reference), cvs["psi"](reference), None)
        panels["flow (unweighted)"] = (
            cvs["phi"](samples.positions),
            cvs["psi"](samples.positions),
            None,
        )
        panels["flow (reweighted)"] = (
            cvs["phi"](samples.positions),
            cvs["psi"](samples.positions),
            samples.log_weights,
        )
        plots.ramachandran(panels, outdir / "ramachandran.png")
    finite = np.isfinite(samples.reduced_energy)
    summary = {
        "n_samples": int(len(samples.log_q)),
        "ess": float(samples.ess),
        "n_eff": float(samples.n_eff),
        "n_infinite_energy": int((~finite).sum()),
        "mean_reduced_energy": float(np.mean(samples.reduced_energy[finite]))
        if finite.any()
        else None,
        "samples_file": "samples.h5",
    }
    progress(1.0, "sampled")
    return samples, summary


def free_energy_report(
    samples,
    system,
    outdir: str | Path,
    *,
    cv: str = "phi",
    state_a: tuple[float, float] = (0.0, math.pi),
    state_b: tuple[float, float] = (-math.pi, 0.0),
    n_bootstrap: int = 200,
    bins: int = 36,
    seed: int = 0,
    reference=None,
) -> dict[str, Any]:
    """dF = F(state_a) - F(state_b) in kT with a bootstrap error along the named dihedral
    ``cv``, and the 1-D free-energy profile ``fes_<cv>.png`` (beside ``reference`` MD frames if
    given). Returns the summary (also written to ``free_energy.json``)."""
    from boltzgen import cv as cvmod
    from boltzgen.analysis import free_energy_difference, free_energy_surface

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    fn = cvmod.dihedral(system, cv)
    values = fn(samples.positions)
    df, err = free_energy_difference(
        samples, cv=values, state_a=state_a, state_b=state_b, n_bootstrap=n_bootstrap, seed=seed
    )
    rng = (-math.pi, math.pi)
    centers, f, f_err = free_energy_surface(
        samples, cvs=values, bins=bins, range=rng, n_bootstrap=n_bootstrap, seed=seed
    )
    curves = {"flow (reweighted)": (centers, f, f_err)}
    if reference is not None:
        from boltzgen.samples import Samples

        ref = Samples.from_trajectory(reference) if hasattr(reference, "xyz") else reference
        rc, rf, _ = free_energy_surface(ref, cvs=fn(ref.positions), bins=bins, range=rng)
        curves["MD data"] = (rc, rf, None)
    plots.free_energy_profile(
        curves, outdir / f"fes_{cv.replace(':', '_')}.png", xlabel=f"{cv} / rad"
    )
    summary = {
        "cv": cv,
        "state_a": list(state_a),
        "state_b": list(state_b),
        "df_kT": float(df),
        "df_err_kT": float(err),
        "ess": float(samples.ess),
        "n_samples": int(len(samples.log_q)),
        "n_bootstrap": n_bootstrap,
    }
    (outdir / "free_energy.json").write_text(json.dumps(summary, indent=2))
    return summary
