"""Job kind ``sample``: weighted samples from a trained generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from boltzgen.jobs.params import ModelParams
from boltzgen.jobs.registry import ProgressFn, job_kind
from boltzgen.jsonable import json_clean


class SampleParams(ModelParams):
    """Draw weighted samples from a trained generator."""

    n_samples: int = Field(
        10_000, ge=1, le=100_000_000, description="a server may allow fewer (max_samples)"
    )
    batch_size: int = Field(4096, ge=1, le=65_536)
    seed: int = Field(0, ge=0)


def draw(params: SampleParams, workdir: Path, progress: ProgressFn):
    """Load the model and write its samples; returns (generator, samples, summary)."""
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.workflow import sample_to_files

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
    return json_clean(draw(params, workdir, progress)[2])
