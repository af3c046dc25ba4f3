"""Job kinds ``cg_train`` and ``cg_simulate``: coarse-grained force fields (boltzgen.cg).

``cg_train`` maps all-atom MD frames to beads, trains the teacher flow (method ``flow``) or
uses the mapped forces (``forces``), fits the CG force field, runs CG Langevin MD and scores
it; ``cg_simulate`` runs and scores CG MD with a force field from a ``cg_train`` job. The
options are :class:`boltzgen.cg.CGConfig` (field ``config``), so the job, the CLI and the
library share one set of defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import Field, GetJsonSchemaHandler, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from boltzgen.cg.forcefield import _ACTIVATIONS
from boltzgen.cg.pipeline import _LIMITS, METHODS, CGConfig
from boltzgen.generator.config import FlowConfig
from boltzgen.jobs.params import ArtifactPath, SystemParams
from boltzgen.jobs.registry import ProgressFn, job_kind

_BEADS = (
    "bead atoms: an mdtraj selection (e.g. 'name CA') or atom indices; default the "
    "peptide backbone (N, CA, C per residue and the caps' peptide-bond atoms)"
)


# what CGConfig.__post_init__ (and the force field / teacher it builds) accept, for the JSON
# schema only: validation stays CGConfig's own, so its messages name the problem
_AT_LEAST_ONE = {"n_walkers", "n_steps", "report_interval", "batch_size", "teacher_batch_size"}
_AT_LEAST_ONE |= {"teacher_layers", "teacher_components", "bins"}
_TAILS = get_args(FlowConfig.model_fields["tails"].annotation)  # the teacher is such a flow
_ENUMS = {"method": METHODS, "activation": tuple(_ACTIVATIONS), "teacher_tails": _TAILS}
_NUMBERS: dict[str, dict[str, float]] = {
    **{name: {"minimum": 0} for name in ("teacher_lr", "lr", "lr_final", "friction")},
    "timestep": {"exclusiveMinimum": 0, "maximum": 0.05},
    "val_fraction": {"minimum": 0, "exclusiveMaximum": 1},
    "teacher_finish": {"minimum": 0, "exclusiveMaximum": 1},
}


class _CGConfigSchema:
    """Adds CGConfig's limits to its JSON schema (the ``$defs`` entry the field refers to)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        ref = handler(core_schema)
        props = handler.resolve_ref_schema(ref)["properties"]
        for name, values in _ENUMS.items():
            props[name]["enum"] = list(values)
        for name, hi in _LIMITS.items():
            bounds = {"type": "integer", "minimum": int(name in _AT_LEAST_ONE), "maximum": hi}
            if "anyOf" in props[name]:  # int | None
                props[name]["anyOf"][0].update(bounds)
            else:
                props[name].update(bounds)
        for name, bounds in _NUMBERS.items():
            props[name].update(bounds)
        return ref


class _CGParams(SystemParams):
    data: ArtifactPath = Field(
        description="artifact id of an all-atom MD HDF5 file (e.g. a simulate job's "
        "trajectory.h5; method 'forces' needs its forces)"
    )
    beads: str | list[int] | None = Field(None, description=_BEADS)
    reference: ArtifactPath | None = Field(
        None, description="artifact id of all-atom frames to score against (default: data)"
    )
    config: Annotated[CGConfig, _CGConfigSchema] = Field(
        default_factory=CGConfig, description="CG pipeline options"
    )

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

    state_shares: ArtifactPath | None = Field(
        None,
        description="artifact id of weighted all-atom samples (e.g. a pipeline job's "
        "samples.h5): the frames are reweighted state by state to the backbone states' shares "
        "these estimate (basin shapes from the frames, the balance between basins from the "
        "samples)",
    )


class CGSimulateParams(_CGParams):
    """CG Langevin MD with a trained force field, started at and scored against MD frames."""

    forcefield: ArtifactPath = Field(description="artifact id of a cg_train job's forcefield.pt")


def _run(
    fn, lead: tuple, params: _CGParams, workdir: Path, progress: ProgressFn, **extra: Any
) -> dict:
    summary = fn(
        *lead,
        params.data,
        params.mapping(),
        workdir,
        params.config,
        reference=params.reference,
        progress=progress,
        **extra,
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

    shares = {"state_shares": params.state_shares} if params.state_shares else {}
    return _run(train_and_simulate, (), params, workdir, progress, **shares)


@job_kind("cg_simulate", CGSimulateParams)
def cg_simulate(
    params: CGSimulateParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """cg_traj.h5 (mdtraj), metrics.json, fes.png, summary.json."""
    from boltzgen.cg.pipeline import run_simulation

    return _run(run_simulation, (params.forcefield,), params, workdir, progress)
