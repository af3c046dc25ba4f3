"""Job kinds ``cg_train`` and ``cg_simulate``: coarse-grained force fields (boltzgen.cg).

``cg_train`` maps all-atom MD frames to beads, trains the teacher flow (method ``flow``) or
uses the mapped forces (``forces``), fits the CG force field, runs CG Langevin MD and scores
it; ``cg_simulate`` runs and scores CG MD with a force field from a ``cg_train`` job. The
options are :class:`boltzgen.cg.CGConfig` (field ``config``), so the job, the CLI and the
library share one set of defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from boltzgen.cg.pipeline import CGConfig
from boltzgen.jobs.params import ArtifactPath, SystemParams
from boltzgen.jobs.registry import ProgressFn, job_kind

_BEADS = (
    "bead atoms: an mdtraj selection (e.g. 'name CA') or atom indices; default the "
    "peptide backbone (N, CA, C per residue and the caps' peptide-bond atoms)"
)


class _CGParams(SystemParams):
    data: ArtifactPath = Field(
        description="artifact id of an all-atom MD HDF5 file (e.g. a simulate job's "
        "trajectory.h5; method 'forces' needs its forces)"
    )
    beads: str | list[int] | None = Field(None, description=_BEADS)
    reference: ArtifactPath | None = Field(
        None, description="artifact id of all-atom frames to score against (default: data)"
    )
    config: CGConfig = Field(default_factory=CGConfig, description="CG pipeline options")

    @field_validator("beads")
    @classmethod
    def _beads(cls, v: str | list[int] | None) -> str | list[int] | None:
        if isinstance(v, list) and not 1 <= len(v) <= 10_000:
            raise ValueError("beads must list between 1 and 10000 atom indices")
        return v

    def mapping(self):
        from boltzgen.cg import Mapping

        return Mapping.select(self.load_system(), self.beads)


class CGTrainParams(_CGParams):
    """Train a CG force field by flow matching (or classical force matching) on MD frames,
    then run and score CG MD with it."""


class CGSimulateParams(_CGParams):
    """CG Langevin MD with a trained force field, started at and scored against MD frames."""

    forcefield: ArtifactPath = Field(description="artifact id of a cg_train job's forcefield.pt")


def _run(fn, lead: tuple, params: _CGParams, workdir: Path, progress: ProgressFn) -> dict:
    summary = fn(
        *lead,
        params.data,
        params.mapping(),
        workdir,
        params.config,
        reference=params.reference,
        progress=progress,
    )
    summary.pop("files", None)  # worker paths; the files are the job's artifacts
    return summary


@job_kind("cg_train", CGTrainParams)
def cg_train(
    params: CGTrainParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """forcefield.pt, teacher.pt (flow method), cg_traj.h5 (mdtraj), metrics.json, fes.png,
    summary.json; the summary holds KL, PMF MSE, dF and the unreached reference mass."""
    from boltzgen.cg.pipeline import train_and_simulate

    return _run(train_and_simulate, (), params, workdir, progress)


@job_kind("cg_simulate", CGSimulateParams)
def cg_simulate(
    params: CGSimulateParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """cg_traj.h5 (mdtraj), metrics.json, fes.png, summary.json."""
    from boltzgen.cg.pipeline import run_simulation

    return _run(run_simulation, (params.forcefield,), params, workdir, progress)
