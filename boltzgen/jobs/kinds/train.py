"""Job kind ``train``: build and train a Boltzmann generator on MD frames.

The parameters are the generator's two typed configurations (:class:`FlowConfig`,
:class:`TrainConfig`) plus the data artifact and optional frame balancing, so the job, the
library and the CLI share one set of defaults and limits (and ``GET /v1/kinds`` shows them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from boltzgen.generator.config import BalanceConfig, FlowConfig, TrainConfig, config_of
from boltzgen.jobs.params import ArtifactPath, SystemParams
from boltzgen.jobs.protocol import RESULT_MODEL_FILE
from boltzgen.jobs.registry import ProgressFn, job_kind
from boltzgen.jsonable import json_clean


class TrainParams(SystemParams, FlowConfig, TrainConfig):
    """Train a Boltzmann generator on MD frames (an artifact, e.g. a simulate job's
    ``trajectory.h5``), by likelihood, reverse KL, their mixture, force matching or
    temperature-annealed training on the energy (loss='anneal', with the data NLL mixed in)."""

    # ``_check`` in the schema: 'data' is needed unless loss is 'kl' or 'anneal' without 'balance'
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["data"], "properties": {"data": {"type": "string"}}},
                {
                    "required": ["loss"],
                    "properties": {"loss": {"enum": ["kl", "anneal"]}, "balance": {"type": "null"}},
                },
            ]
        }
    )

    data: ArtifactPath | None = Field(
        None, description="artifact id of an MD HDF5 file; optional for loss='kl' or 'anneal'"
    )
    balance: BalanceConfig | None = Field(
        None, description="give a rare CV state a fixed share of the frames (proposal shaping)"
    )

    @model_validator(mode="after")
    def _check(self) -> TrainParams:
        if self.data is None and self.loss not in ("kl", "anneal"):
            raise ValueError(f"loss {self.loss!r} needs training data (field 'data')")
        if self.data is None and self.balance is not None:
            raise ValueError("'balance' weights training frames: it needs 'data'")
        return self


@job_kind("train", TrainParams)
def train(
    params: TrainParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Train a generator; writes model.pt (registered as a model), history.json, training.png.
    A crashed attempt resumes from the last epoch's checkpoint."""
    from boltzgen.generator.workflow import train_model

    _, summary = train_model(
        params.load_system(),
        params.data,
        workdir,
        architecture=config_of(FlowConfig, params),
        train=config_of(TrainConfig, params),
        checkpoint=checkpoint_dir / "train.pt",
        progress=progress,
        balance=params.balance,
    )
    summary[RESULT_MODEL_FILE] = summary.pop("model_file")
    return json_clean(summary)
