"""The two typed configurations of a Boltzmann generator, with every default written once.

* :class:`FlowConfig`: the architecture (flow kind, layers, conditioner widths, mixture
  components or spline bins, base distribution, bounds of the unit box, dtype, seed).
* :class:`TrainConfig`: the optimisation (loss and its weights, epochs, batch size, learning
  rate and schedule, early stopping, time limit, seed).

``BoltzmannGenerator.build(system, **FlowConfig fields)``, ``gen.fit(data, **TrainConfig
fields)``, the CLI options of ``boltzgen train``, the ``train`` job's parameters (and so the JSON
schema ``GET /v1/kinds`` shows) and the benchmarks all read their defaults and limits from here.
Both are pydantic models: unknown fields and out-of-range values are rejected with a message
naming the field (:func:`make_config` turns that into an :class:`~boltzgen.errors.InputError`).
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from boltzgen.errors import InputError

__all__ = [
    "BalanceConfig",
    "FlowConfig",
    "TrainConfig",
    "check_state_shares",
    "config_of",
    "flow_size",
    "make_config",
]

LOSSES = ("nll", "kl", "mixed", "force", "anneal")
LOSS_TERMS = ("nll", "kl", "force")
# losses that train on the energy (draw from the flow, evaluate the target)
ENERGY_LOSSES = ("kl", "mixed", "anneal")


class _Config(BaseModel):
    # forbid: a misspelt option is an error, not silently the default
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FlowConfig(_Config):
    """Architecture of a generator: everything needed to rebuild it (stored in model files)."""

    flow: Literal["smooth", "spline"] = Field(
        "smooth", description="smooth (C-infinity bump mixtures) or spline (RQ-spline baseline)"
    )
    n_layers: int = Field(4, ge=1, le=32, description="coupling layers")
    hidden: tuple[int, ...] = Field(
        (64, 64), min_length=1, max_length=8, description="conditioner MLP widths"
    )
    masks: Literal["alternate", "grouped", "hierarchical"] = Field(
        "alternate",
        description="coupling schedule: alternate (even/odd, half/half index splits), grouped "
        "(torsion halves, then bond/angle halves, each conditioned on the rest) or "
        "hierarchical (torsions given torsions, angles given torsions, bonds given both)",
    )
    n_components: int = Field(8, ge=1, le=64, description="smooth-mixture components")
    n_bins: int = Field(8, ge=2, le=64, description="spline bins")
    base: Literal["truncnormal", "uniform"] = Field(
        "truncnormal", description="base distribution on the box dims (circular dims: uniform)"
    )
    rigid: Literal["remove", "keep"] = Field(
        "remove", description="remove (3n-6 internal coordinates) or keep the rigid-body dofs"
    )
    bounds: Literal["data", "forcefield"] | None = Field(
        None,
        description="bond/angle bounds of the unit box from the data (min/max + margin) or the "
        "force field (equilibrium +- k_sigma sigma); default: data when given",
    )
    margin: float = Field(0.1, ge=0.0, le=5.0, description="bounds margin, fraction of range")
    k_sigma: float = Field(6.0, gt=0.0, le=100.0, description="force-field bounds width")
    tails: Literal["none", "logistic"] = Field(
        "none", description="'logistic': soft bond/angle bounds (needed for flow-driven MD)"
    )
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the initial weights")

    @field_validator("hidden")
    @classmethod
    def _widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 or h > 4096 for h in v):
            raise ValueError("hidden widths must be in [1, 4096]")
        return tuple(int(h) for h in v)


class TrainConfig(_Config):
    """Options of :func:`boltzgen.generator.training.fit` (JSON-able, stored in checkpoints)."""

    loss: Literal["nll", "kl", "mixed", "force", "anneal"] = Field(
        "nll",
        description="nll (likelihood), kl (reverse KL), mixed, force (force matching), anneal "
        "(temperature-annealed reweighted likelihood on flow draws + data NLL, as TA-BG)",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: {"nll": 1.0, "kl": 0.1},
        description="loss='mixed': weight of each term (nll, kl, force)",
    )
    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(256, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="held-out frames")
    patience: int = Field(8, ge=1, le=100_000, description="epochs without improvement")
    lr_schedule: Literal["plateau", "cosine", "none"] = "plateau"
    lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="plateau schedule factor")
    finish_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="the run's last share (of its time or steps): restart from the best "
        "weights with a fresh Adam, the validation frames train too, and the rate decays from "
        "finish_lr to 0 by a cosine; early stopping starts it sooner (0: off)",
    )
    finish_lr: float | None = Field(
        None, gt=0.0, le=1.0, description="the finish's first learning rate (default lr / 5)"
    )
    clip_grad: float = Field(100.0, ge=0.0, description="gradient-norm clip (0: off)")
    kl_batch_size: int = Field(128, ge=1, le=65_536)
    kl_steps_per_epoch: int = Field(50, ge=1, le=100_000, description="data-free epochs")
    energy_cutoff: float = Field(1e3, gt=0.0, description="kT; above it energies are softened")
    data_weight: float = Field(
        1.0, ge=0.0, le=1e6, description="loss='anneal': weight of the data NLL mixed in"
    )
    anneal_start: float = Field(
        2.0, ge=1.0, le=100.0, description="anneal: first target temperature / system's"
    )
    anneal_stages: int = Field(
        4, ge=1, le=1000, description="anneal: geometric temperature ladder down to the system's"
    )
    anneal_samples: int = Field(
        4096, ge=16, le=1_000_000, description="anneal: flow draws (energies) per epoch"
    )
    guard_samples: int = Field(
        2000, ge=0, le=1_000_000, description="flow draws of the state-mass guard (0: off)"
    )
    guard_every: int = Field(
        0, ge=0, le=100_000, description="epochs between state-mass checks (0: at the end)"
    )
    guard_min_ratio: float = Field(
        0.2, gt=0.0, le=1.0, description="a state with flow/data mass below this is dropped"
    )
    max_steps: int | None = Field(None, ge=1)
    time_limit: float | None = Field(None, gt=0.0, description="seconds of training")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the data split and draws")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(LOSS_TERMS))
        if bad:
            raise ValueError(f"unknown loss terms {bad}; expected a subset of {LOSS_TERMS}")
        if any(not math.isfinite(w) or w < 0 for w in v.values()):
            raise ValueError("loss weights must be finite and >= 0")
        return dict(v)

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term for this ``loss``."""
        if self.loss == "mixed":
            return {k: float(self.weights.get(k, 0.0)) for k in LOSS_TERMS}
        return {self.loss: 1.0}


def check_state_shares(states: list[Any], shares: list[float]) -> None:
    """Raise :class:`InputError` unless there is one share per state, each > 0, summing to < 1
    (the frames in no state keep the rest)."""
    if not states:
        raise InputError("state_weights needs at least one state")
    if len(states) != len(shares):
        raise InputError(f"{len(states)} states but {len(shares)} shares")
    if any(s <= 0 for s in shares) or sum(shares) >= 1:
        raise InputError(f"shares must be > 0 and sum to < 1, got {list(shares)}")


class BalanceConfig(_Config):
    """Weight the training frames so each state of a CV gets a fixed share of the draws
    (proposal shaping; the importance weights remove the bias)."""

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
    def _shares_fit_states(self) -> BalanceConfig:
        check_state_shares(self.states, self.shares)
        if any(not (math.isfinite(lo) and math.isfinite(hi)) for lo, hi in self.states):
            raise ValueError("state bounds must be finite")
        return self


C = TypeVar("C", bound=BaseModel)


def make_config(cls: type[C], config: C | dict[str, Any] | None = None, **overrides: Any) -> C:
    """``cls`` from a config object or dict plus keyword overrides; a bad field raises
    :class:`~boltzgen.errors.InputError` naming it (the library's error, not pydantic's)."""
    base = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
    try:
        return cls.model_validate({**base, **overrides})
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or cls.__name__}: {e['msg']}"
            for e in exc.errors()
        )
        raise InputError(f"invalid {cls.__name__}: {msgs}") from exc


def config_of(cls: type[C], obj: BaseModel) -> C:
    """The ``cls`` part of a model that carries its fields (e.g. a job's parameters that
    inherit :class:`FlowConfig` and :class:`TrainConfig`)."""
    return cls.model_validate(obj.model_dump(include=set(cls.model_fields)))


def flow_size(dim: int) -> dict[str, Any]:
    """The size rule: :class:`FlowConfig` layers and widths (and the learning rate) from the
    molecule's dimension ``dim`` = 3n - 6.

    Anchored on the hand-tuned alanine-dipeptide recipe (dim 60: 8 coupling layers, 64x64
    conditioners, lr 5e-4). With k = max(0, round(log2(dim / 60))) doublings of the dimension:
    hidden width 64 * 2^k, at most 128; two hidden layers; 8 coupling layers. Examples: dim 60
    -> 8 x (64, 64); 102 (ACE-TRP-NME) to 180 (ACE-(ALA)5-NME) -> 8 x (128, 128); larger
    molecules the same. Refitted on flow ESS after one hour on 2 cores (benchmarks/RESULTS.md):
    at 180 dims 8 x (128, 128) beat the old rule's 12 x (256, 256) and 8 x (64, 64); at 102
    dims 8 x (64, 64), 8 x (128, 128) and the old 10 x (128, 128) tied. A bigger flow trains
    too few epochs per CPU-hour to pay; beyond 180 dims the rule is extrapolated, not measured.
    """
    dim = int(dim)
    if dim < 1:
        raise InputError(f"dimension must be >= 1, got {dim}")
    k = max(0, round(math.log2(dim / 60.0)))
    width = min(128, 64 * 2**k)
    return {"n_layers": 8, "hidden": (width, width), "lr": 5e-4}
