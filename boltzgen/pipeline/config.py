"""The pipeline's settings (:class:`PipelineConfig`), its budget split over the stages and the
durations the CLI reads (``"60m"``). Light: importing it loads neither torch nor OpenMM (the
CLI and the job registry import it at start-up)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from boltzgen.constants import DEFAULT_FORCEFIELD
from boltzgen.errors import InputError

__all__ = [
    "STAGES",
    "PipelineConfig",
    "budget_split",
    "data_sampler",
    "make_config",
    "parse_duration",
]

#: The stages in order (keys of ``summary["stages"]``; the budget has one share per stage
#: except ``system``, which is counted in ``analysis``'s remainder).
STAGES = ("system", "data", "training", "sampling", "analysis")
#: The fields that build the System (they override a given System's when set explicitly).
SYSTEM_FIELDS = ("solvent", "temperature", "forcefield")


class PipelineConfig(BaseModel):
    """Settings of :func:`run_pipeline` (also the ``pipeline`` job's parameters).

    The system fields (solvent, temperature, forcefield) build the System from a PDB. When
    :func:`run_pipeline` is given a System instead, fields set explicitly here override the
    System's and unset ones keep the System's.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    solvent: str = Field("vacuum", description="vacuum, obc2, obc1, gbn, gbn2 or hct")
    temperature: float = Field(300.0, gt=0.0, le=2000.0, description="target temperature, K")
    forcefield: tuple[str, ...] = Field(
        DEFAULT_FORCEFIELD, min_length=1, description="OpenMM force-field XML files"
    )
    budget_minutes: float = Field(
        60.0, gt=0.0, le=7 * 24 * 60, description="wall-clock budget of the whole run, minutes"
    )
    data_share: float = Field(0.3, gt=0.0, lt=1.0, description="budget share: REMD data")
    train_share: float = Field(0.5, gt=0.0, lt=1.0, description="budget share: training")
    sample_share: float = Field(
        0.15, gt=0.0, lt=1.0, description="budget share: sampling and refinement"
    )
    n_samples: int | None = Field(
        None, ge=100, le=5_000_000, description="flow samples; default: from the budget"
    )
    refine: bool = Field(
        True, description="refine the samples toward the Boltzmann target (annealed SMC)"
    )
    refine_steps: int = Field(
        3, ge=1, le=1000, description="HMC sweeps per annealing level of the refinement"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of REMD, flow and sampling")
    n_flows: int = Field(
        2,
        ge=1,
        le=8,
        description=(
            "independently trained flows (own seeds, a 1/n share of the sampling time each; "
            "with at least n cores they train side by side, each for the whole training share, "
            "else one after the other for 1/n of it); every dF is their mean with an error "
            "that includes their spread"
        ),
    )
    min_state_share: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="least training-weight share of every populated backbone state",
    )
    min_state_frames: int = Field(
        5, ge=1, description="frames a backbone state needs to count as populated"
    )
    min_weight_kish: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="the balanced training weights keep at least this Kish fraction of the "
        "frames' effective size (min_state_share is lowered where it would cost more)",
    )
    sampler: Literal["auto", "remd", "metad"] = Field(
        "auto",
        description="training data: 'remd' (temperature replica exchange), 'metad' "
        "(well-tempered metadynamics over every residue's state dihedral (at most three), "
        "then sampling with the bias frozen: exact weights, many more rare-basin frames per "
        "core-second, but flows trained on its weighted frames were not better); 'auto': remd",
    )
    t_max: float | None = Field(
        None, gt=0.0, le=3000.0, description="top of the REMD ladder, K (default 2 x T)"
    )
    target_acceptance: float = Field(
        0.4, gt=0.0, lt=1.0, description="neighbour swap acceptance the ladder is built for"
    )
    max_replicas: int = Field(16, ge=2, le=64, description="most REMD replicas")
    timestep: float = Field(0.001, gt=0.0, le=0.004, description="MD time step, ps")
    flow: Literal["smooth", "spline"] = Field("smooth", description="flow kind")
    n_layers: int | None = Field(
        None, ge=1, le=32, description="coupling layers (default: flow_size rule)"
    )
    hidden: tuple[int, ...] | None = Field(
        None, min_length=1, max_length=8, description="conditioner widths (default: rule)"
    )
    lr: float = Field(5e-4, gt=0.0, le=1.0, description="Adam learning rate")
    platform: str = Field("auto", description="OpenMM platform for REMD and energies")
    cores: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="CPU cores to use: REMD replicas step in up to this many processes, the "
        "energy workers and (in the CLI and the job) torch's threads are sized from it; "
        "default every core the process may use (its CPU affinity), and never more",
    )
    n_bootstrap: int = Field(200, ge=2, le=10_000, description="bootstrap replicates")
    cvs: tuple[str, ...] | None = Field(
        None,
        max_length=64,
        description="backbone dihedrals to report dF(CV >= 0 vs < 0) for, e.g. "
        "['phi:2', 'psi:3'] ('phi' alone: every residue's phi); default every residue's "
        "state dihedral (phi, psi for proline: boltzgen.cv.state_dihedrals)",
    )

    @field_validator("cvs", mode="after")
    @classmethod
    def _cv_names(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            from boltzgen.cv import parse_cv_name  # here: cv loads torch and mdtraj

            for name in v:
                try:
                    parse_cv_name(name)
                except InputError as exc:
                    raise ValueError(str(exc)) from None
        return v

    @field_validator("forcefield", mode="before")
    @classmethod
    def _ff(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _shares(self) -> PipelineConfig:
        total = self.data_share + self.train_share + self.sample_share
        if total >= 1.0:
            raise ValueError(
                f"data_share + train_share + sample_share = {total:.3f} must be < 1 "
                "(the rest is for building the system, analysis and the report)"
            )
        if self.t_max is not None and self.t_max <= self.temperature:
            raise ValueError(f"t_max ({self.t_max} K) must exceed temperature")
        return self


def make_config(config: PipelineConfig | dict[str, Any] | None) -> PipelineConfig:
    """A :class:`PipelineConfig` from itself, a dict of its fields or None (the defaults); a
    bad field raises :class:`InputError` naming it."""
    if isinstance(config, PipelineConfig):
        return config
    try:
        return PipelineConfig.model_validate(dict(config or {}))
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'PipelineConfig'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InputError(f"invalid PipelineConfig: {msgs}") from exc


def budget_split(config: PipelineConfig) -> dict[str, dict[str, float]]:
    """Seconds and share of the budget per stage: data, training, sampling (incl.
    refinement) and analysis (the rest: building the system, analysis, plots, report)."""
    total = 60.0 * config.budget_minutes
    shares = {
        "data": config.data_share,
        "training": config.train_share,
        "sampling": config.sample_share,
    }
    shares["analysis"] = 1.0 - sum(shares.values())
    return {k: {"share": v, "seconds": v * total} for k, v in shares.items()}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h|hr)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a duration such as ``"60m"``, ``"90s"``, ``"1.5h"`` (units s, m, h; also
    sec, min, hr). Raises :class:`InputError` with an example otherwise."""
    m = _DURATION.match(str(text))
    if not m:
        raise InputError(
            f"cannot read the duration {text!r}: give a number with a unit s, m or h, "
            "e.g. '90s', '60m' or '1.5h'"
        )
    seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    if seconds <= 0:
        raise InputError(f"the duration {text!r} must be positive")
    return seconds


def data_sampler(sampler: str = "auto") -> str:
    """The training-data method: ``sampler`` unless "auto", which is replica exchange.

    Evidence (benchmarks/RESULTS.md): metadynamics with a frozen bias crosses phi far more
    often per core-second (ADP in OBC2: ~350 crossings in 1,070 core-s against 22 in 2,684
    for 5-replica REMD), but flows trained on its weighted frames were not better: ADP vacuum
    at 10 min gave dF 2.91 +- 0.24 kT against the reference 3.61 +- 0.05 (then: 3.87) (REMD data at 15 min:
    3.68 +- 0.08, twice), and with two or three biased dihedrals the weights' ESS fell to
    2-11 % and the flows failed."""
    return "remd" if sampler == "auto" else sampler
