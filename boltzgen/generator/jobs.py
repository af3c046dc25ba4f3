"""Job kinds of the Boltzmann generator: ``train``, ``sample``, ``free_energy``.

Thin wrappers over :mod:`boltzgen.generator.pipeline`, registered in :mod:`boltzgen.jobs` so
the service, the CLI and the demo run the same code and report the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from boltzgen.generator.data import check_state_shares
from boltzgen.generator.pipeline import json_safe
from boltzgen.jobs import (
    RESULT_MODEL_FILE,
    ArtifactPath,
    ModelParams,
    ProgressFn,
    SystemParams,
    job_kind,
)


class BalanceParams(BaseModel):
    """Weight the training frames so each state of a CV gets a fixed share of the draws."""

    cv: str = Field("phi", description="named dihedral: phi, psi, omega, chi1..chi4")
    states: list[tuple[float, float]] = Field(
        default_factory=lambda: [(0.0, math.pi)],
        min_length=1,
        max_length=16,
        description="[lo, hi) in rad (lo > hi wraps around +-pi)",
    )
    shares: list[float] = Field(
        default_factory=lambda: [0.05],
        min_length=1,
        max_length=16,
        description="weight share of each state; the frames in no state share the rest",
    )

    @model_validator(mode="after")
    def _shares_fit_states(self) -> BalanceParams:
        # the library's own check, so a bad request is a 422 at submit, not a failed job
        check_state_shares(self.states, self.shares)
        return self


class TrainParams(SystemParams):
    """Train a Boltzmann generator on MD frames (an artifact, e.g. a simulate job's
    ``trajectory.h5``), by likelihood, reverse KL, their mixture or force matching."""

    data: ArtifactPath | None = Field(
        None, description="artifact id of an MD HDF5 file; optional for loss='kl'"
    )
    flow: str = Field("smooth", pattern="^(smooth|spline)$")
    loss: str = Field("nll", pattern="^(nll|kl|mixed|force)$")
    weights: dict[str, float] = Field(default_factory=lambda: {"nll": 1.0, "kl": 0.1})
    n_layers: int = Field(4, ge=1, le=32)
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1, max_length=8)
    n_components: int = Field(8, ge=1, le=64)
    n_bins: int = Field(8, ge=2, le=64)
    tails: str = Field(
        "none",
        pattern="^(none|logistic)$",
        description="'logistic': soft bond/angle bounds (needed for flow-driven MD)",
    )
    margin: float = Field(0.1, ge=0.0, le=5.0, description="bounds margin, fraction of range")
    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(256, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=1.0)
    patience: int = Field(8, ge=1)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    time_limit: float | None = Field(None, gt=0, description="seconds of training")
    seed: int = Field(0, ge=0)
    balance: BalanceParams | None = Field(
        None, description="give a rare CV state a fixed share of the frames (proposal shaping)"
    )

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if self.data is None and self.loss != "kl":
            raise ValueError(f"loss {self.loss!r} needs training data (field 'data')")
        if self.data is None and self.balance is not None:
            raise ValueError("'balance' weights training frames: it needs 'data'")
        if any(h < 1 or h > 4096 for h in self.hidden):
            raise ValueError("hidden widths must be in [1, 4096]")
        return self


@job_kind("train", TrainParams)
def train(
    params: TrainParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Train a generator; writes model.pt (registered as a model), history.json, training.png.
    A crashed attempt resumes from the last epoch's checkpoint."""
    from boltzgen.generator.pipeline import train_model

    system = params.load_system()
    _, summary = train_model(
        system,
        params.data,
        workdir,
        architecture={
            "flow": params.flow,
            "n_layers": params.n_layers,
            "hidden": tuple(params.hidden),
            "n_components": params.n_components,
            "n_bins": params.n_bins,
            "seed": params.seed,
            "tails": params.tails,
            "margin": params.margin,
        },
        train={
            "loss": params.loss,
            "weights": params.weights,
            "epochs": params.epochs,
            "batch_size": params.batch_size,
            "lr": params.lr,
            "patience": params.patience,
            "val_fraction": params.val_fraction,
            "time_limit": params.time_limit,
            "seed": params.seed,
        },
        checkpoint=checkpoint_dir / "train.pt",
        progress=progress,
        balance=params.balance.model_dump() if params.balance else None,
    )
    summary[RESULT_MODEL_FILE] = summary.pop("model_file")
    return json_safe(summary)


class SampleParams(ModelParams):
    """Draw weighted samples from a trained generator."""

    n_samples: int = Field(10_000, ge=1)
    batch_size: int = Field(4096, ge=1, le=65_536)
    seed: int = Field(0, ge=0)


def _draw(params: SampleParams, workdir: Path, progress: ProgressFn):
    """Load the model and write its samples; returns (generator, samples, summary)."""
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.pipeline import sample_to_files

    gen = BoltzmannGenerator.load(params.model, params.load_system())
    samples, summary = sample_to_files(
        gen,
        params.n_samples,
        workdir,
        batch_size=params.batch_size,
        seed=params.seed,
        progress=progress,
    )
    return gen, samples, summary


@job_kind("sample", SampleParams)
def sample(
    params: SampleParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Samples as samples.h5 (mdtraj HDF5 + log-weights, log q, reduced energies), samples.npz,
    and plots; the summary holds the ESS."""
    return json_safe(_draw(params, workdir, progress)[2])


class FreeEnergyParams(SampleParams):
    """Free-energy difference between two CV states from reweighted samples."""

    cv: str = Field("phi", description="named dihedral: phi, psi, omega, chi1..chi4")
    state_a: tuple[float, float] = Field((0.0, math.pi), description="[lo, hi) in rad")
    state_b: tuple[float, float] = Field((-math.pi, 0.0), description="[lo, hi) in rad")
    n_bootstrap: int = Field(200, ge=0, le=10_000)


@job_kind("free_energy", FreeEnergyParams)
def free_energy(
    params: FreeEnergyParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """dF = F(state_a) - F(state_b) in kT with a bootstrap error, the FES along the CV, and
    the samples it came from."""
    from boltzgen.generator.pipeline import free_energy_report

    gen, samples, ss = _draw(params, workdir, lambda f, m: progress(0.8 * f, m))
    progress(0.85, "free energies")
    fe = free_energy_report(
        samples,
        gen.system,
        workdir,
        cv=params.cv,
        state_a=params.state_a,
        state_b=params.state_b,
        n_bootstrap=params.n_bootstrap,
        seed=params.seed,
    )
    progress(1.0, "done")
    return json_safe({**ss, **fe})
