"""From a PDB to results in one call: ``run_pipeline(pdb, out_dir, PipelineConfig(...))``.

The stages, each within its share of one wall-clock budget (printed up front by the CLI):

1. **system**: :meth:`boltzgen.systems.System.from_pdb` (force field, solvent, temperature).
2. **data** (:mod:`~boltzgen.pipeline.data`): by default temperature replica exchange
   (:func:`boltzgen.enhanced.replica_exchange`) on a ladder chosen from the molecule's size
   (:func:`boltzgen.remd_ladder.temperature_ladder`), whose target-temperature replica is the
   training set; with ``sampler="metad"`` well-tempered metadynamics over the state dihedrals
   with the bias then frozen (:func:`boltzgen.metadynamics.metadynamics`; frames weighted by
   exp(V/kT)). The number of steps is calibrated by timing a short run so the data fill their
   budget.
3. **training** (:mod:`~boltzgen.pipeline.training`): frames balanced over the backbone
   dihedral states of every residue (:mod:`boltzgen.generator.balance`); a flow sized from the
   molecule's dimension (:func:`boltzgen.generator.config.flow_size`), trained by likelihood
   until the training budget is spent.
4. **sampling** (+ refinement, :mod:`~boltzgen.pipeline.sampling`): weighted samples from the
   flow (the number chosen from the measured sampling rate and the budget unless given);
   refinement by annealed importance sampling / SMC per backbone state
   (:func:`boltzgen.refinement.refine_within`) of as many draws as the rest of the sampling
   budget pays for (levels predicted from the draws' weights).
5. **analysis** (:mod:`~boltzgen.pipeline.analysis`, :mod:`~boltzgen.pipeline.report`):
   dF(CV >= 0 vs < 0) per residue (phi; psi for proline) with errors, the clash fraction
   (:func:`boltzgen.samples.clash_fraction`), the ESS curve
   (:func:`boltzgen.analysis.ess_curve`), plots, ``report.md`` and ``summary.json``.

Every finished stage is recorded in ``checkpoint_dir`` (:mod:`~boltzgen.pipeline.records`:
REMD data, trained model and the training checkpoint, samples) with a fingerprint of its
inputs; a rerun with the same inputs skips it (``summary["stages"][stage]["resumed"]``).
:mod:`~boltzgen.pipeline.run` strings the stages together; :mod:`~boltzgen.pipeline.config`
holds the settings and the budget split. Units: nm, K, kJ/mol, ps; free energies kT.

Names load on first use, so ``from boltzgen.pipeline import PipelineConfig`` (the CLI, the job
registry) does not pull in torch or OpenMM. The science the pipeline uses lives in the library
and is re-exported here under its old names (``boltzgen.pipeline.temperature_ladder``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # the pipeline itself
    "STAGES": "boltzgen.pipeline.config",
    "PipelineConfig": "boltzgen.pipeline.config",
    "budget_split": "boltzgen.pipeline.config",
    "data_sampler": "boltzgen.pipeline.config",
    "parse_duration": "boltzgen.pipeline.config",
    "load_stage_data": "boltzgen.pipeline.data",
    "resolve_cvs": "boltzgen.pipeline.analysis",
    "run_pipeline": "boltzgen.pipeline.run",
    # the science it uses, at home in the library
    "calibrate_remd": "boltzgen.remd_ladder",
    "degrees_of_freedom": "boltzgen.remd_ladder",
    "predicted_acceptance": "boltzgen.remd_ladder",
    "temperature_ladder": "boltzgen.remd_ladder",
    "backbone_state_labels": "boltzgen.generator.balance",
    "pattern_weights": "boltzgen.generator.balance",
    "flow_size": "boltzgen.generator.config",
    "CLASH_DISTANCE_NM": "boltzgen.samples",
    "clash_fraction": "boltzgen.samples",
    "ess_curve": "boltzgen.analysis",
    "measure_rates": "boltzgen.refinement.planning",
    "plan_refinement": "boltzgen.refinement.planning",
    "refine_by_backbone_state": "boltzgen.refinement.planning",
    "refine_within": "boltzgen.refinement.planning",
    "strata_free_energy": "boltzgen.refinement.planning",
    "stratified_allocation": "boltzgen.refinement.planning",
}
__all__ = [
    "CLASH_DISTANCE_NM",
    "PipelineConfig",
    "STAGES",
    "backbone_state_labels",
    "budget_split",
    "calibrate_remd",
    "clash_fraction",
    "data_sampler",
    "degrees_of_freedom",
    "ess_curve",
    "flow_size",
    "load_stage_data",
    "measure_rates",
    "parse_duration",
    "pattern_weights",
    "plan_refinement",
    "predicted_acceptance",
    "refine_by_backbone_state",
    "refine_within",
    "resolve_cvs",
    "run_pipeline",
    "strata_free_energy",
    "stratified_allocation",
    "temperature_ladder",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'boltzgen.pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from boltzgen.analysis import ess_curve
    from boltzgen.generator.balance import backbone_state_labels, pattern_weights
    from boltzgen.generator.config import flow_size
    from boltzgen.pipeline.analysis import resolve_cvs
    from boltzgen.pipeline.config import (
        STAGES,
        PipelineConfig,
        budget_split,
        data_sampler,
        parse_duration,
    )
    from boltzgen.pipeline.data import load_stage_data
    from boltzgen.pipeline.run import run_pipeline
    from boltzgen.refinement.planning import (
        measure_rates,
        plan_refinement,
        refine_by_backbone_state,
        refine_within,
        strata_free_energy,
        stratified_allocation,
    )
    from boltzgen.remd_ladder import (
        calibrate_remd,
        degrees_of_freedom,
        predicted_acceptance,
        temperature_ladder,
    )
    from boltzgen.samples import CLASH_DISTANCE_NM, clash_fraction
