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
    refine_seconds: float = Field(
        0.0,
        ge=0.0,
        le=7 * 24 * 3600,
        description="then refine the draws by stratified SMC for this long, s (refined.h5)",
    )


def draw(params: SampleParams, workdir: Path, progress: ProgressFn):
    """Load the model and write its samples; with ``refine_seconds`` also refine them
    (refined.h5; the refined samples are returned, the summary gets "refine"). Returns
    (generator, samples, summary)."""
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.workflow import sample_to_files

    gen = BoltzmannGenerator.load(params.model, params.load_system())
    samples, summary = sample_to_files(
        gen,
        params.n_samples,
        workdir,
        batch_size=params.batch_size,
        seed=params.seed,
        progress=progress if params.refine_seconds <= 0 else lambda f, m: progress(0.5 * f, m),
    )
    if params.refine_seconds > 0:
        from boltzgen.refinement.planning import refine_within

        samples, summary["refine"] = refine_within(
            gen,
            samples,
            params.refine_seconds,
            seed=params.seed,
            progress=lambda f, m: progress(0.5 + 0.5 * f, f"refining: {m}"),
        )
        samples.save(workdir / "refined.h5")
    return gen, samples, summary


@job_kind("sample", SampleParams)
def sample(
    params: SampleParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Samples as samples.h5 (mdtraj HDF5 + log-weights, log q, reduced energies), samples.npz,
    and plots; the summary holds the ESS. With refine_seconds > 0 also refined.h5 and, under
    "refine", the refined ESS, energy evaluations and dF(phi) per residue from the strata."""
    return json_clean(draw(params, workdir, progress)[2])
