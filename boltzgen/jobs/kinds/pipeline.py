"""Job kind ``pipeline``: from a molecule to reweighted samples and free energies in one job.

The parameters are :class:`~boltzgen.pipeline.PipelineConfig` (the budget, its split, the
flow size rule overrides, refinement, the CVs to report) on top of the system; the job runs
:func:`~boltzgen.pipeline.run_pipeline`, whose stage records in the checkpoint directory let a
crashed attempt resume after the last finished stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ConfigDict

from boltzgen.cores import resolve_cores
from boltzgen.cv import DIHEDRAL_NAMES
from boltzgen.jobs.params import SystemParams
from boltzgen.jobs.protocol import RESULT_MODEL_FILE
from boltzgen.jobs.registry import ProgressFn, job_kind
from boltzgen.pipeline.config import PipelineConfig
from boltzgen.systems import SOLVENTS

#: a CV name as ``boltzgen.cv.parse_cv_name`` reads it (it also allows upper case and blanks)
CV_NAME_PATTERN = r"^({})(:[+-]?[0-9]+)?$".format("|".join(DIHEDRAL_NAMES))


def _schema_limits(schema: dict[str, Any]) -> None:
    """What PipelineConfig's validators (and the System it builds) accept, in the JSON schema
    only: validation stays the library's, so its messages name the problem."""
    props = schema["properties"]
    props["solvent"]["enum"] = list(SOLVENTS)
    props["cvs"]["anyOf"][0]["items"]["pattern"] = CV_NAME_PATTERN


class PipelineParams(SystemParams, PipelineConfig):
    """PDB in, results out: enhanced-sampling data over every backbone state (metadynamics or
    REMD, ``sampler``), a flow sized from the molecule, training within the budget, sampling,
    stratified refinement, reweighting and a report. Solvent, temperature and force field set
    here rebuild the uploaded system with them; unset, the system's own are used."""

    model_config = ConfigDict(json_schema_extra=_schema_limits)


def pipeline_config(params: PipelineParams) -> PipelineConfig:
    """The PipelineConfig part of the parameters, keeping which fields were set explicitly
    (unset system fields must not override the uploaded system's)."""
    fields = set(PipelineConfig.model_fields) & params.model_fields_set
    return PipelineConfig.model_validate(params.model_dump(include=fields))


def job_cores(params: PipelineParams) -> int:
    """The cores the job uses: its ``cores`` parameter, else the executor's share per job
    (``BOLTZGEN_JOB_THREADS``, what a server sets so that concurrent jobs do not crowd each
    other), else every core the process may use; never more than those."""
    share = os.environ.get("BOLTZGEN_JOB_THREADS", "").strip()
    default = int(share) if share.isdigit() and int(share) > 0 else None
    return resolve_cores(params.cores if params.cores is not None else default)


@job_kind("pipeline", PipelineParams)
def pipeline(
    params: PipelineParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Run the whole pipeline; writes report.md, summary.json, model.pt (registered as a
    model), samples.h5 (mdtraj HDF5 with the weights), flow_samples.h5 and plots/."""
    from boltzgen.pipeline.run import run_pipeline  # here: it loads torch and OpenMM

    cores = job_cores(params)
    config = pipeline_config(params).model_copy(update={"cores": cores})
    summary = run_pipeline(
        params.load_system(), workdir, config, progress=progress, checkpoint_dir=checkpoint_dir
    )
    summary.pop("checkpoint_dir", None)  # a path inside the worker, meaningless to a client
    summary[RESULT_MODEL_FILE] = "model.pt"
    return summary
