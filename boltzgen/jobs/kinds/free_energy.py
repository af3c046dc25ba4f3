"""Job kind ``free_energy``: dF between two CV states from reweighted flow samples."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from boltzgen.jobs.kinds.sample import SampleParams, draw
from boltzgen.jobs.registry import ProgressFn, job_kind
from boltzgen.jsonable import json_clean

CV_NAME = re.compile(r"\s*(phi|psi|omega|chi[1-4])\s*(:\s*[+-]?\d+\s*)?", re.IGNORECASE)


class FreeEnergyParams(SampleParams):
    """Free-energy difference between two CV states from reweighted samples."""

    cv: str = Field(
        "phi",
        description="named dihedral: phi, psi, omega, chi1..chi4, optionally :<residue number>",
    )
    state_a: tuple[float, float] = Field((0.0, math.pi), description="[lo, hi) in rad")
    state_b: tuple[float, float] = Field((-math.pi, 0.0), description="[lo, hi) in rad")
    n_bootstrap: int = Field(200, ge=0, le=10_000)

    @field_validator("cv")
    @classmethod
    def _cv_name(cls, v: str) -> str:
        # the name is checked at submit; whether that residue exists, when the job runs
        if not CV_NAME.fullmatch(v):
            raise ValueError(
                f"unknown CV {v!r}; use phi, psi, omega or chi1..chi4, optionally with a PDB "
                "residue number (e.g. 'phi:2')"
            )
        return v

    @field_validator("state_a", "state_b")
    @classmethod
    def _finite_interval(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(b) and abs(b) <= 2 * math.pi for b in v):
            raise ValueError("state bounds must be finite angles in [-2 pi, 2 pi] rad")
        if v[0] == v[1]:
            raise ValueError("a state must be an interval with lo != hi")
        return v


@job_kind("free_energy", FreeEnergyParams)
def free_energy(
    params: FreeEnergyParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """dF = F(state_a) - F(state_b) in kT with a bootstrap error, the FES along the CV, and
    the samples it came from."""
    from boltzgen.generator.workflow import free_energy_report

    gen, samples, ss = draw(params, workdir, lambda f, m: progress(0.8 * f, m))
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
    return json_clean({**ss, **fe})
