"""From a PDB to results in one call: ``run_pipeline(pdb, out_dir, PipelineConfig(...))``.

The stages, each within its share of one wall-clock budget (printed up front by the CLI):

1. **system**: :meth:`boltzgen.systems.System.from_pdb` (force field, solvent, temperature).
2. **data** (:func:`data_sampler`): by default temperature replica exchange
   (:func:`boltzgen.enhanced.replica_exchange`) on a ladder chosen from the molecule's size
   (:func:`temperature_ladder`), whose target-temperature replica is the training set; with
   ``sampler="metad"`` well-tempered metadynamics over the state dihedrals with the bias then
   frozen (:func:`boltzgen.metadynamics.metadynamics`; frames weighted by exp(V/kT)). The
   number of steps is calibrated by timing a short run so the data fill their budget.
3. **training**: frames balanced over the backbone dihedral states of every residue
   (:func:`backbone_state_labels`, :func:`pattern_weights`); a flow sized from the molecule's
   dimension (:func:`flow_size`), trained by likelihood until the training budget is spent.
4. **sampling** (+ refinement): weighted samples from the flow (the number chosen from the
   measured sampling rate and the budget unless given); refinement by annealed importance
   sampling / SMC (:func:`boltzgen.refinement.refine`) of as many draws as the rest of the
   sampling budget pays for (levels predicted from the draws' weights).
5. **analysis**: dF(CV >= 0 vs < 0) per residue (phi; psi for proline) with errors, the clash fraction,
   the ESS curve, plots, ``report.md`` and ``summary.json``.

Every finished stage is recorded in ``checkpoint_dir`` (REMD data, trained model and the
training checkpoint, samples) with a fingerprint of its inputs; a rerun with the same inputs
skips it (``summary["stages"][stage]["resumed"]``). Units: nm, K, kJ/mol, ps; free energies kT.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from boltzgen.constants import DEFAULT_FORCEFIELD
from boltzgen.errors import InputError
from boltzgen.jsonable import json_clean

__all__ = [
    "STAGES",
    "PipelineConfig",
    "backbone_state_labels",
    "budget_split",
    "calibrate_remd",
    "clash_fraction",
    "ess_curve",
    "flow_size",
    "parse_duration",
    "pattern_weights",
    "predicted_acceptance",
    "run_pipeline",
    "temperature_ladder",
]

ProgressFn = Callable[[float, str], None]
StageProgressFn = Callable[[str, float, str], None]

#: The stages in order (keys of ``summary["stages"]``; the budget has one share per stage
#: except ``system``, which is counted in ``analysis``'s remainder).
STAGES = ("system", "data", "training", "sampling", "analysis")
_SYSTEM_FIELDS = ("solvent", "temperature", "forcefield")
_STATE_FILE = "pipeline_stages.json"
#: Two atoms more than two bonds apart closer than this (nm) are a clash. The closest such
#: pair in 20,000 alanine-dipeptide REMD frames (300 K, amber99sbildn) is 0.16 nm.
CLASH_DISTANCE_NM = 0.1


# ============================================================================ configuration
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
    min_state_share: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="least training-weight share of every populated backbone state",
    )
    min_state_frames: int = Field(
        5, ge=1, description="frames a backbone state needs to count as populated"
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
            from boltzgen.cv import parse_cv_name

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


def _make(config: PipelineConfig | dict[str, Any] | None) -> PipelineConfig:
    from pydantic import ValidationError

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


# ============================================================================ rules
def degrees_of_freedom(system) -> int:
    """Internal degrees of freedom 3n - 6 minus constraints (what the ladder rule counts)."""
    return max(1, 3 * system.n_atoms - 6 - system.openmm_system.getNumConstraints())


def predicted_acceptance(ratio: float, dof: int) -> float:
    """Mean swap acceptance between neighbours at temperatures T and ``ratio`` T for a
    molecule with ``dof`` degrees of freedom, in the harmonic approximation:
    ``erfc(ln(ratio) sqrt(dof) / (2 sqrt 2))``.

    Derivation: the potential energy has mean dof kT/2 and variance dof (kT)^2 / 2, so
    X = (beta_i - beta_j)(U_i - U_j) is Gaussian with variance s^2 = dof x^2 (x = ln ratio) and
    mean -s^2/2, and E[min(1, e^X)] = erfc(s / (2 sqrt 2)). For alanine dipeptide (dof 60) on
    the 5-replica 300-600 K ladder this predicts 0.50; 0.51 was measured (data/README.md).
    """
    return float(math.erfc(math.log(ratio) * math.sqrt(dof) / (2.0 * math.sqrt(2.0))))


def _erfcinv(p: float) -> float:
    from scipy.special import erfcinv

    return float(erfcinv(p))


def temperature_ladder(
    system, t_max: float | None = None, target_acceptance: float = 0.4, max_replicas: int = 16
) -> tuple[np.ndarray, dict[str, Any]]:
    """The REMD ladder for ``system``: geometric from its temperature T to ``t_max`` (default
    2 T, 600 K at 300 K) with the fewest replicas whose predicted neighbour acceptance
    (:func:`predicted_acceptance`) is at least ``target_acceptance``.

    Rule: the largest ratio between neighbours is x* = exp(2 sqrt 2 erfcinv(p) / sqrt(dof));
    replicas R = 1 + ceil(ln(t_max / T) / ln x*). Alanine dipeptide (dof 60, p = 0.4): 5
    replicas 300-600 K; a 42-atom tripeptide (dof 120): 6; Trp-cage (dof 906): 13. If R
    exceeds ``max_replicas`` the ladder keeps the acceptance and stops lower (t_max falls):
    replicas that do not exchange are of no use.

    Returns: (temperatures (R,) K, info dict with dof, ratio, predicted acceptance).
    """
    from boltzgen.enhanced import geometric_temperatures

    t0 = float(system.temperature)
    top = 2.0 * t0 if t_max is None else float(t_max)
    if top <= t0:
        raise InputError(f"t_max ({top} K) must exceed the temperature ({t0} K)")
    dof = degrees_of_freedom(system)
    log_x = 2.0 * math.sqrt(2.0) * _erfcinv(target_acceptance) / math.sqrt(dof)
    n_gaps = max(1, math.ceil(math.log(top / t0) / log_x - 1e-9))
    capped = n_gaps + 1 > max_replicas
    if capped:
        n_gaps = max_replicas - 1
        top = t0 * math.exp(log_x * n_gaps)
    temps = geometric_temperatures(t0, top, n_gaps + 1)
    ratio = float(temps[1] / temps[0])
    info = {
        "dof": dof,
        "n_replicas": len(temps),
        "t_min_K": t0,
        "t_max_K": float(temps[-1]),
        "t_max_requested_K": 2.0 * t0 if t_max is None else float(t_max),
        "capped_by_max_replicas": capped,
        "neighbour_ratio": ratio,
        "target_acceptance": float(target_acceptance),
        "predicted_acceptance": predicted_acceptance(ratio, dof),
        "rule": "geometric T..t_max; replicas = 1 + ceil(ln(t_max/T) / (2 sqrt2 "
        "erfcinv(p) / sqrt(dof))), dof = 3n - 6 - constraints",
    }
    return temps, info


def flow_size(dim: int) -> dict[str, Any]:
    """Flow architecture from the molecule's dimension ``dim`` = 3n - 6.

    Anchored on the hand-tuned alanine-dipeptide recipe (dim 60: 8 coupling layers, 64x64
    conditioners, lr 5e-4). With k = max(0, round(log2(dim / 60))) doublings of the dimension:
    hidden width 64 * 2^k (at most 256), two hidden layers, coupling layers 8 + 2k (at most 12).
    Examples: dim 60 -> 8 x (64, 64); 120 (capped tripeptide) -> 10 x (128, 128);
    240 -> 12 x (256, 256); Trp-cage (906) -> 12 x (256, 256). The caps keep the conditioner
    output layers (which grow as dim x width) trainable on a CPU.
    """
    dim = int(dim)
    if dim < 1:
        raise InputError(f"dimension must be >= 1, got {dim}")
    k = max(0, round(math.log2(dim / 60.0)))
    width = min(256, 64 * 2**k)
    return {"n_layers": min(12, 8 + 2 * k), "hidden": (width, width), "lr": 5e-4}


# ============================================================================ balancing
def backbone_state_labels(system, positions: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Label frames by the sign pattern of every residue's state dihedral
    (:func:`boltzgen.cv.state_dihedrals`: phi, or psi for proline).

    Returns (labels (N,) strings such as ``"+-"`` with one character per residue in chain
    order, ``+`` for an angle in [0, pi) and ``-`` otherwise; the dihedrals' names in that
    order, e.g. ``["phi:2", "psi:3"]``). A molecule without a backbone gets one label ``""``.
    """
    from boltzgen.cv import state_dihedrals

    dihedrals = state_dihedrals(system)
    n = len(positions)
    if not dihedrals:
        return np.full(n, "", dtype=object), []
    signs = np.stack([d(positions) >= 0.0 for d in dihedrals.values()], axis=1)
    labels = np.array(["".join("+" if s else "-" for s in row) for row in signs], dtype=object)
    return labels, list(dihedrals)


def pattern_weights(
    labels: Sequence[Any],
    min_share: float = 0.05,
    min_frames: int = 5,
    frame_weights: Any = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Frame weights (N,) (mean 1) that give every populated state at least ``min_share`` of
    the total weight.

    labels: (N,) state label of each frame (e.g. from :func:`backbone_state_labels`). A state
    is populated if it holds at least ``min_frames`` frames; the others keep their data share
    (boosting two or three frames would only teach the flow spikes). Among the populated
    states, those below ``min_share`` are raised to it and the rest are scaled down in
    proportion to their data shares (water-filling, repeated until none falls below); if the
    populated states cannot all get ``min_share``, they share their total mass equally.
    Within a state every frame keeps the same weight, so the data's distribution inside each
    state is unchanged (as :func:`boltzgen.generator.data.state_weights`, which fixes the
    share of given CV intervals instead). ``frame_weights`` (N,) >= 0, for frames of a biased
    run (exp(V/kT)): the data shares are the weighted ones and, inside a state, frames keep
    weights in proportion to them.

    Returns: (weights, table) with one row per state: ``state``, ``n_frames``, ``data_share``,
    ``weight_share``, ``populated``, sorted by decreasing frame count.
    """
    lab = np.asarray(labels, dtype=object)
    if lab.ndim != 1 or len(lab) == 0:
        raise InputError("labels must be a non-empty (N,) array")
    if not 0.0 <= min_share < 1.0:
        raise InputError(f"min_share must be in [0, 1), got {min_share}")
    n = len(lab)
    states, inverse, counts = np.unique(lab.astype(str), return_inverse=True, return_counts=True)
    from boltzgen.generator.data import check_frame_weights

    fw = (
        np.ones(n)
        if frame_weights is None
        else check_frame_weights(frame_weights, n, "frame_weights")
    )
    in_state = np.bincount(inverse, weights=fw, minlength=len(states))
    natural = in_state / fw.sum()
    populated = counts >= int(min_frames)
    target = natural.copy()
    mass = natural[populated].sum()
    idx = np.flatnonzero(populated)
    if len(idx) > 1 and min_share > 0:
        low: set[int] = set()
        while True:
            rest = [k for k in idx if k not in low]
            if not rest or min_share * len(low) >= mass:
                target[idx] = mass / len(idx)  # cannot give each its minimum: equal shares
                break
            scale = (mass - min_share * len(low)) / natural[rest].sum()
            new_low = {k for k in rest if natural[k] * scale < min_share}
            if not new_low:
                target[rest] = natural[rest] * scale
                target[list(low)] = min_share
                break
            low |= new_low
    with np.errstate(invalid="ignore", divide="ignore"):
        per_weight = np.where(in_state > 0, target / in_state, 0.0)
    weights = per_weight[inverse] * fw * n
    order = np.argsort(-counts, kind="stable")
    table = [
        {
            "state": str(states[k]),
            "n_frames": int(counts[k]),
            "data_share": float(natural[k]),
            "weight_share": float(target[k]),
            "populated": bool(populated[k]),
        }
        for k in order
    ]
    return weights, table


# ============================================================================ diagnostics
def _clash_pairs(topology) -> np.ndarray:
    """(P, 2) atom pairs more than two bonds apart (1-2 and 1-3 pairs excluded)."""
    n = topology.n_atoms
    adj: list[set[int]] = [set() for _ in range(n)]
    for a, b in topology.bonds:
        adj[a.index].add(b.index)
        adj[b.index].add(a.index)
    close = np.zeros((n, n), dtype=bool)
    for i in range(n):
        close[i, i] = True
        for j in adj[i]:
            close[i, j] = True
            for k in adj[j]:
                close[i, k] = True
    i, j = np.triu_indices(n, k=1)
    keep = ~close[i, j]
    return np.stack([i[keep], j[keep]], axis=1)


def clash_fraction(
    samples,
    topology,
    distance: float = CLASH_DISTANCE_NM,
    max_check: int = 50_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Fraction of samples that are unphysical: two atoms more than two bonds apart closer
    than ``distance`` nm, or a non-finite (infinite) reduced energy.

    Checks at most ``max_check`` samples (a random subset for more; the fractions are then
    estimates). Returns ``clash_fraction`` (overlap or infinite energy), ``overlap_fraction``,
    ``infinite_energy_fraction``, ``n_checked``, ``distance_nm``.
    """
    x = np.asarray(samples.positions)
    u = np.asarray(samples.reduced_energy)
    n = len(x)
    sel = np.arange(n)
    if n > max_check:
        sel = np.sort(np.random.default_rng(seed).choice(n, max_check, replace=False))
    pairs = _clash_pairs(topology)
    overlap = np.zeros(len(sel), dtype=bool)
    if len(pairs):
        step = max(1, int(4e6 // len(pairs)))
        for s in range(0, len(sel), step):
            xb = x[sel[s : s + step]]
            d2 = np.sum((xb[:, pairs[:, 0]] - xb[:, pairs[:, 1]]) ** 2, axis=-1)
            overlap[s : s + step] = d2.min(axis=1) < distance**2
    infinite = ~np.isfinite(u[sel])
    return {
        "clash_fraction": float(np.mean(overlap | infinite)),
        "overlap_fraction": float(np.mean(overlap)),
        "infinite_energy_fraction": float(np.mean(infinite)),
        "n_checked": len(sel),
        "distance_nm": float(distance),
    }


def ess_curve(log_weights: np.ndarray, n_points: int = 25, n_min: int = 100) -> dict[str, list]:
    """Kish ESS of the first n samples for n on a geometric grid up to all of them (samples
    are independent draws, so prefixes are fair subsets): ``n``, ``ess`` (fraction),
    ``n_eff``. A falling fraction means rare large weights: the proposal misses mass."""
    from boltzgen.analysis import n_effective

    lw = np.asarray(log_weights, dtype=np.float64)
    total = len(lw)
    grid = np.unique(np.geomspace(min(n_min, total), total, n_points).astype(int))
    out: dict[str, list] = {"n": [], "ess": [], "n_eff": []}
    for m in grid:
        part = lw[:m]
        ne = n_effective(part) if np.isfinite(part).any() else 0.0
        out["n"].append(int(m))
        out["n_eff"].append(float(ne))
        out["ess"].append(float(ne / m))
    return out


def _fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_clean(obj), indent=2))
    os.replace(tmp, path)


class _Stages:
    """The stage records in ``checkpoint_dir/pipeline_stages.json``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / _STATE_FILE
        self.records: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.records = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.records = {}

    def done(self, stage: str, fingerprint: str, files: Sequence[str] = ()) -> dict | None:
        rec = self.records.get(stage)
        if not rec or rec.get("fingerprint") != fingerprint or not rec.get("finished"):
            return None
        if not all((self.dir / f).exists() for f in files):
            return None
        return rec["result"]

    def save(self, stage: str, fingerprint: str, result: dict[str, Any]) -> None:
        self.records[stage] = {"fingerprint": fingerprint, "finished": True, "result": result}
        _write_json(self.path, self.records)

    def start(self, stage: str, fingerprint: str) -> bool:
        """Mark ``stage`` started; True if an unfinished attempt with the same inputs exists
        (its partial files may be resumed)."""
        rec = self.records.get(stage) or {}
        same = rec.get("fingerprint") == fingerprint
        self.records[stage] = {"fingerprint": fingerprint, "finished": False}
        _write_json(self.path, self.records)
        return same


# ============================================================================ the pipeline
class _Clock:
    """Overall and per-stage progress, weighted by the stages' budget shares."""

    def __init__(
        self,
        split: dict[str, dict[str, float]],
        progress: ProgressFn | None,
        stage_progress: StageProgressFn | None,
    ) -> None:
        shares = {s: split[s]["share"] for s in ("data", "training", "sampling")}
        rest = split["analysis"]["share"]
        shares["system"] = 0.3 * rest
        shares["analysis"] = 0.7 * rest
        self.start: dict[str, float] = {}
        acc = 0.0
        for s in STAGES:
            self.start[s] = acc
            acc += shares[s]
        self.shares = shares
        self.progress = progress
        self.stage_progress = stage_progress

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        f = min(max(float(fraction), 0.0), 1.0)
        if self.stage_progress is not None:
            self.stage_progress(stage, f, message)
        if self.progress is not None:
            self.progress(
                min(1.0, self.start[stage] + self.shares[stage] * f), f"{stage}: {message}"
            )


class _StopCalibration(Exception):
    pass


def calibrate_remd(
    system,
    temperatures: np.ndarray,
    *,
    seconds: float = 2.0,
    exchange_interval: int = 100,
    timestep: float = 0.001,
    platform: str = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """Time a short replica-exchange run: steps per second (every replica advancing one
    step) and the fixed setup cost (contexts, minimisation), in about ``seconds``.

    The run is stopped from its progress callback once ``seconds`` have passed after the
    first exchange cycle (or after 20,000 steps)."""
    from boltzgen.enhanced import replica_exchange

    marks: list[tuple[float, int]] = []
    t0 = time.perf_counter()

    def tick(done: int, total: int) -> None:
        now = time.perf_counter()
        marks.append((now, done))
        if now - marks[0][0] >= seconds and len(marks) >= 3:
            raise _StopCalibration

    with contextlib.suppress(_StopCalibration):
        replica_exchange(
            system,
            temperatures,
            n_steps=20_000,
            exchange_interval=exchange_interval,
            report_interval=exchange_interval,
            n_equilibration=0,
            timestep=timestep,
            seed=seed + 7919,
            platform=platform,
            progress=tick,
        )
    wall = time.perf_counter() - t0
    if len(marks) < 2:
        raise InputError("REMD calibration recorded no progress")
    (ta, sa), (tb, sb) = marks[0], marks[-1]
    rate = (sb - sa) / max(tb - ta, 1e-6)
    setup = max(0.0, (ta - t0) - sa / rate)
    return {"steps_per_second": rate, "setup_seconds": setup, "calibration_seconds": wall}


def _resolve_system(pdb_or_system: Any, config: PipelineConfig):
    from boltzgen.systems import System

    if isinstance(pdb_or_system, System):
        spec = pdb_or_system.to_spec()
        changed = False
        for name in sorted(set(_SYSTEM_FIELDS) & config.model_fields_set):
            value = getattr(config, name)
            value = list(value) if name == "forcefield" else value
            if spec.get(name) != value:
                spec[name] = value
                changed = True
        return System.from_spec(spec) if changed else pdb_or_system
    return System.from_pdb(
        pdb_or_system,
        forcefield=tuple(config.forcefield),
        solvent=config.solvent,
        temperature=config.temperature,
    )


def _stage_fields(config: PipelineConfig, names: Sequence[str]) -> dict[str, Any]:
    return {k: getattr(config, k) for k in names}


_DATA_FIELDS = (
    "budget_minutes",
    "data_share",
    "seed",
    "sampler",
    "t_max",
    "target_acceptance",
    "max_replicas",
    "timestep",
    "platform",
)
_TRAIN_FIELDS = (
    "train_share",
    "sample_share",
    "n_samples",
    "refine",
    "flow",
    "n_layers",
    "hidden",
    "lr",
    "min_state_share",
    "min_state_frames",
)
_SAMPLE_FIELDS = ("n_samples", "sample_share", "refine", "refine_steps")


def data_sampler(sampler: str = "auto") -> str:
    """The training-data method: ``sampler`` unless "auto", which is replica exchange.

    Evidence (benchmarks/RESULTS.md): metadynamics with a frozen bias crosses phi far more
    often per core-second (ADP in OBC2: ~350 crossings in 1,070 core-s against 22 in 2,684
    for 5-replica REMD), but flows trained on its weighted frames were not better: ADP vacuum
    at 10 min gave dF 2.91 +- 0.24 kT against the reference 3.87 +- 0.16 (REMD data at 15 min:
    3.68 +- 0.08, twice), and with two or three biased dihedrals the weights' ESS fell to
    2-11 % and the flows failed."""
    return "remd" if sampler == "auto" else sampler


def _data_stage(system, config, split, ckpt: Path, stages: _Stages, fp: str, clock) -> dict:
    if data_sampler(config.sampler) == "metad":
        return _metad_stage(system, config, split, ckpt, stages, fp, clock)
    return _remd_stage(system, config, split, ckpt, stages, fp, clock)


def _metad_stage(system, config, split, ckpt: Path, stages: _Stages, fp: str, clock) -> dict:
    """Metadynamics over the state dihedrals (30 % of the steps learn the bias, 70 % sample
    with it frozen), frames with their exact log-weights V/kT to ``metad.npz``."""
    from boltzgen.cv import state_dihedrals
    from boltzgen.md import calibrate_md
    from boltzgen.metadynamics import metadynamics

    done = stages.done("data", fp, ["metad.npz"])
    if done is not None:
        clock("data", 1.0, "metadynamics data from the checkpoint")
        return {**done, "resumed": True}
    stages.start("data", fp)
    t0 = time.perf_counter()
    budget = split["data"]["seconds"]
    cvs = list(state_dihedrals(system).values())
    clock("data", 0.0, "calibrating MD speed")
    cal = calibrate_md(
        system,
        seconds=min(3.0, max(0.5, 0.03 * budget)),
        timestep=config.timestep,
        platform=config.platform,
        seed=config.seed,
    )
    left = budget - (time.perf_counter() - t0)
    # steps at the plain-MD rate are an upper bound: bias deposits (dearer with more CVs) and
    # frame reads slow metadynamics down, so the run is held to the time left instead
    total = int(max(left - cal["setup_seconds"], 0.0) * cal["steps_per_second"])
    n_learn = int(0.3 * total) // 500 * 500
    report = max(50, math.ceil((total - n_learn) / 20_000 / 50) * 50)
    n_prod = (total - n_learn) // report * report
    if n_prod < 20 * report or n_learn < 500:
        need = (40 * report + 1000) / cal["steps_per_second"] + cal["setup_seconds"]
        raise InputError(
            f"the data budget ({budget:.0f} s) is too small for {system.n_atoms} atoms: MD runs "
            f"{cal['steps_per_second']:.0f} steps/s, metadynamics needs about {need:.0f} s; "
            "raise the budget or data_share"
        )
    names = ", ".join(c.name for c in cvs)
    clock("data", 0.02, f"metadynamics over {names}")

    def report_progress(done: int, tot: int) -> None:
        clock("data", 0.02 + 0.98 * done / max(tot, 1), f"metadynamics {done:,}/{tot:,} steps")

    r = metadynamics(
        system,
        cvs,
        n_metadynamics_steps=n_learn,
        n_steps=n_prod,
        report_interval=report,
        timestep=config.timestep,
        seed=config.seed,
        platform=config.platform,
        time_limit=max(left, 1.0),
        progress=report_progress,
    )
    part = ckpt / "metad.part.npz"
    with open(part, "wb") as fh:
        np.savez(fh, positions=r.positions, log_weight=r.log_weights, cv=r.cv)
    os.replace(part, ckpt / "metad.npz")
    crossings = {
        c.name: int((np.diff(np.signbit(r.cv[:, i]).astype(np.int8)) != 0).sum())
        for i, c in enumerate(cvs)
    }
    result = {
        "sampler": "metad",
        "file": "metad.npz",
        "dihedrals": [c.name for c in cvs],
        "n_learning_steps": r.settings["n_metadynamics_steps"],
        "n_steps": r.settings["n_steps"],
        "report_interval_steps": report,
        "simulated_ns": (r.settings["n_metadynamics_steps"] + r.settings["n_steps"])
        * config.timestep
        / 1000.0,
        "n_frames": int(len(r.bias)),
        "ess": float(r.ess),
        "sign_changes": crossings,
        "bias_factor": r.settings["bias_factor"],
        "calibration": cal,
        "platform": r.settings.get("platform"),
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("data", fp, result)
    clock("data", 1.0, f"{result['n_frames']} frames, ESS {100 * result['ess']:.0f} %")
    return {**result, "resumed": False}


def load_stage_data(ckpt: Path, data_rec: dict) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """(positions (N, n_atoms, 3) nm, forces or None, log-weights (N,) or None for unbiased
    frames) of the data stage's file."""
    from boltzgen.md import load_md

    if data_rec.get("sampler") == "metad":
        with np.load(ckpt / data_rec["file"]) as d:
            return np.asarray(d["positions"]), None, np.asarray(d["log_weight"], dtype=np.float64)
    md = load_md(ckpt / data_rec.get("file", "remd.h5"))
    return np.asarray(md.trajectory.xyz), md.forces, None


def _remd_stage(system, config, split, ckpt: Path, stages: _Stages, fp: str, clock) -> dict:
    from boltzgen.enhanced import replica_exchange

    done = stages.done("data", fp, ["remd.h5"])
    if done is not None:
        clock("data", 1.0, "REMD data from the checkpoint")
        return {**done, "resumed": True}
    stages.start("data", fp)
    t0 = time.perf_counter()
    budget = split["data"]["seconds"]
    temps, ladder = temperature_ladder(
        system, config.t_max, config.target_acceptance, config.max_replicas
    )
    clock("data", 0.0, f"calibrating REMD ({len(temps)} replicas)")
    cal = calibrate_remd(
        system,
        temps,
        seconds=min(3.0, max(0.5, 0.03 * budget)),
        timestep=config.timestep,
        platform=config.platform,
        seed=config.seed,
    )
    exchange = 100
    left = budget - (time.perf_counter() - t0) - cal["setup_seconds"]
    total_steps = int(0.97 * max(left, 0.0) * cal["steps_per_second"])
    n_equil = min(20_000, total_steps // 10) // exchange * exchange
    n_prod = total_steps - n_equil
    # one frame per exchange interval or sparser: at most 20,000 frames (consecutive frames
    # are correlated; more of them only lengthen the epochs)
    report = max(exchange, math.ceil(n_prod / 20_000 / exchange) * exchange)
    n_prod = n_prod // report * report
    if n_prod < 20 * report:
        need = (20 * report + n_equil) / cal["steps_per_second"] + cal["setup_seconds"]
        raise InputError(
            f"the data budget ({budget:.0f} s) is too small for {system.n_atoms} atoms with "
            f"{len(temps)} replicas: REMD runs {cal['steps_per_second']:.0f} steps/s, 20 frames "
            f"need about {need:.0f} s; raise the budget or data_share"
        )
    clock("data", 0.02, f"REMD {len(temps)} replicas {temps[0]:.0f}-{temps[-1]:.0f} K")
    part = ckpt / "remd.part.h5"
    total = n_prod + n_equil

    def report_progress(done: int, tot: int) -> None:
        clock("data", 0.02 + 0.98 * done / max(tot, 1), f"REMD {done:,}/{tot:,} steps")

    r = replica_exchange(
        system,
        temps,
        n_steps=n_prod,
        exchange_interval=exchange,
        report_interval=report,
        n_equilibration=n_equil,
        timestep=config.timestep,
        seed=config.seed,
        out=part,
        platform=config.platform,
        progress=report_progress,
    )
    os.replace(part, ckpt / "remd.h5")
    walkers = np.unique(r.replica_of_frame)
    result = {
        "sampler": "remd",
        "file": "remd.h5",
        "temperatures_K": r.temperatures.tolist(),
        "ladder": ladder,
        "acceptance": r.acceptance.tolist(),
        "mean_acceptance": float(np.nanmean(r.acceptance)),
        "min_acceptance": float(np.nanmin(r.acceptance)),
        "n_attempts": r.n_attempts.tolist(),
        "n_steps_per_replica": n_prod,
        "n_equilibration_steps": n_equil,
        "simulated_ns_per_replica": total * config.timestep / 1000.0,
        "exchange_interval_steps": exchange,
        "report_interval_steps": report,
        "n_frames": int(r.trajectory.n_frames),
        "walkers_at_target": len(walkers),
        "calibration": cal,
        "platform": r.settings.get("platform"),
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("data", fp, result)
    clock(
        "data", 1.0, f"{r.trajectory.n_frames} frames, acceptance {result['mean_acceptance']:.2f}"
    )
    return {**result, "resumed": False}


def measure_rates(gen, positions: np.ndarray, n: int = 256) -> dict[str, float]:
    """Seconds per configuration: a flow draw (``flow_s``), an energy (``energy_s``) and one
    refinement evaluation (``energy_force_s``: energy + forces and log q with its gradient),
    measured on ``positions`` (N, n_atoms, 3) nm."""
    import torch

    n = int(min(n, len(positions)))
    t0 = time.perf_counter()
    with torch.no_grad():
        gen.sample_positions(n)
    t_flow = (time.perf_counter() - t0) / n
    x = torch.as_tensor(np.asarray(positions[:n], dtype=np.float64))
    t0 = time.perf_counter()
    gen.energy(x)
    t_energy = (time.perf_counter() - t0) / n
    # one refinement evaluation: energy + forces and log q + its gradient, on other frames
    # (an energy model may cache the last batch)
    x = torch.as_tensor(np.asarray(positions[-n:], dtype=np.float64)).requires_grad_(True)
    t0 = time.perf_counter()
    gen.energy.energy_and_forces(x.detach())
    gen.log_prob(x).sum().backward()
    t_force = (time.perf_counter() - t0) / n
    return {"flow_s": t_flow, "energy_s": t_energy, "energy_force_s": t_force}


def _plan_samples(config, split, system, rates) -> dict[str, Any]:
    """How many samples (and refinement evaluations) the sampling budget pays for."""
    budget = split["sampling"]["seconds"]
    refine_on = bool(config.refine)
    per_sample = rates["flow_s"] + rates["energy_s"]
    draw_time = budget * (0.5 if refine_on else 0.9)
    mem_cap = int(2.5e8 // (12 * system.n_atoms))  # about 250 MB of float32 positions
    if config.n_samples is not None:
        n = int(config.n_samples)
        auto = False
    else:
        n = int(np.clip(draw_time / per_sample, 1000, min(200_000, mem_cap)))
        auto = True
    # refinement gets the other half; how many draws it can move is decided once their
    # weights are known (:func:`plan_refinement`)
    expected = n * per_sample + (0.5 * budget if refine_on else 0.0)
    return {
        "n_samples": n,
        "auto": auto,
        "refine_seconds": 0.5 * budget if refine_on else 0.0,
        "energy_force_s": rates["energy_force_s"],
        "refine": refine_on,
        "expected_seconds": expected,
        "surplus_seconds": max(0.0, budget - expected) if auto else 0.0,
        "seconds_per_sample": per_sample,
    }


def _train_stage(
    system, energy, config, split, ckpt, stages, fp, clock, positions, forces, log_w, wall_before
):
    import torch

    from boltzgen.generator.config import FlowConfig, TrainConfig
    from boltzgen.generator.data import TrainingData
    from boltzgen.generator.model import BoltzmannGenerator
    from boltzgen.generator.workflow import train_model

    labels, state_names = backbone_state_labels(system, positions)
    frame_w = None if log_w is None else np.exp(log_w - np.max(log_w))
    weights, table = pattern_weights(
        labels, config.min_state_share, config.min_state_frames, frame_weights=frame_w
    )
    dim = 3 * system.n_atoms - 6
    rule = flow_size(dim)
    arch = FlowConfig(
        flow=config.flow,
        n_layers=config.n_layers or rule["n_layers"],
        hidden=tuple(config.hidden or rule["hidden"]),
        seed=config.seed,
    )
    td = TrainingData(positions, forces, weights)
    gen = BoltzmannGenerator.build(system, data=td, config=arch)
    gen.energy = energy
    rates = measure_rates(gen, positions)
    plan = _plan_samples(config, split, system, rates)
    balance = {"dihedrals": state_names, "states": table, "min_share": config.min_state_share}
    flow_info = {
        "dim": dim,
        "rule": rule,
        "flow": arch.flow,
        "n_layers": arch.n_layers,
        "hidden": list(arch.hidden),
        "lr": config.lr,
        "n_parameters": int(sum(p.numel() for p in gen.parameters())),
    }
    done = stages.done("training", fp, ["training/model.pt"])
    if done is not None:
        clock("training", 1.0, "model from the checkpoint")
        gen = BoltzmannGenerator.load(ckpt / "training" / "model.pt", system)
        gen.energy = energy
        return gen, {**done, "resumed": True}, balance, plan
    if not stages.start("training", fp):
        (ckpt / "train.pt").unlink(missing_ok=True)  # a checkpoint of other inputs
    del gen
    # the training budget plus what the data stage left and the sampling plan does not need
    limit = split["training"]["seconds"] + max(0.0, split["data"]["seconds"] - wall_before)
    limit += plan["surplus_seconds"]
    limit = max(5.0, limit)
    train_cfg = TrainConfig(
        epochs=100_000,
        batch_size=256,
        lr=config.lr,
        patience=50,
        lr_schedule="plateau",
        time_limit=limit,
        seed=config.seed,
    )
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    clock("training", 0.0, f"{arch.n_layers} layers x {list(arch.hidden)}, {limit:.0f} s")

    def on_progress(fraction: float, message: str) -> None:
        elapsed = time.perf_counter() - t0
        clock("training", min(0.99, elapsed / limit), message)

    gen, summary = train_model(
        system,
        td,
        ckpt / "training",
        architecture=arch,
        train=train_cfg,
        checkpoint=ckpt / "train.pt",
        progress=on_progress,
    )
    gen.energy = energy
    result = {
        **flow_info,
        "n_parameters": summary["n_parameters"],
        "time_limit_s": limit,
        "epochs_run": summary["epochs_run"],
        "stop_reason": summary["stop_reason"],
        "best_val_nll": summary["best_val_nll"],
        "n_frames": summary["n_frames"],
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("training", fp, result)
    clock("training", 1.0, f"{result['epochs_run']} epochs ({result['stop_reason']})")
    return gen, {**result, "resumed": False}, balance, plan


def _energy_model(system, config):
    from boltzgen.energy import EnergyModel, fastest_platform

    return EnergyModel(system, platform=fastest_platform(system, config.platform))


def _sample_stage(gen, system, config, split, ckpt, stages, fp, clock, plan) -> tuple[Any, dict]:
    import torch

    from boltzgen.samples import Samples

    done = stages.done("sampling", fp, ["samples.h5"])
    if done is not None:
        clock("sampling", 1.0, "samples from the checkpoint")
        return Samples.load(ckpt / "samples.h5"), {**done, "resumed": True}
    stages.start("sampling", fp)
    t0 = time.perf_counter()
    n = plan["n_samples"]
    deadline = 1.5 * split["sampling"]["seconds"] * (0.5 if plan["refine"] else 0.9)
    torch.manual_seed(config.seed + 1)
    batch = int(np.clip(2_000_000 // (3 * system.n_atoms), 256, 4096))
    parts = []
    drawn = 0
    stopped_early = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid configurations are counted below
        while drawn < n:
            m = min(batch, n - drawn)
            parts.append(gen.sample(m, batch_size=m))
            drawn += m
            frac = drawn / n
            clock("sampling", 0.9 * frac if plan["refine"] else frac, f"{drawn:,}/{n:,} samples")
            if plan["auto"] and time.perf_counter() - t0 > deadline and drawn < n:
                stopped_early = True
                break
    samples = Samples.concatenate(parts) if len(parts) > 1 else parts[0]
    samples.save(ckpt / "samples.h5")
    result = {
        "n_samples": len(samples),
        "planned": plan["n_samples"],
        "auto": plan["auto"],
        "stopped_at_deadline": stopped_early,
        "ess": float(samples.ess),
        "n_eff": float(samples.n_eff),
        "seconds_per_sample_estimated": plan["seconds_per_sample"],
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("sampling", fp, result)
    return samples, {**result, "resumed": False}


_LEAPFROG = 5  # HMC leapfrog steps per sweep in the refinement


def plan_refinement(
    samples,
    system,
    seconds: float,
    eval_seconds: float,
    *,
    n_steps: int = 3,
    n_leapfrog: int = _LEAPFROG,
    min_particles: int = 100,
) -> dict[str, Any]:
    """How many draws a refinement by backbone state can afford in ``seconds``.

    Each state's levels are predicted from its draws' importance weights
    (:func:`boltzgen.refinement.predicted_levels`); a particle costs levels x ``n_steps`` x
    ``n_leapfrog`` evaluations of ``eval_seconds`` (energy + forces + log q gradient, as
    measured by :func:`measure_rates`). Returns ``n_particles`` (at least ``min_particles``
    or all draws), ``levels`` per state, ``max_levels`` (twice the largest prediction, at
    least 10: the cap that keeps a badly covered state from eating the budget) and the
    ``predicted_seconds``."""
    from boltzgen.refinement import predicted_levels

    labels = backbone_state_labels(system, samples.positions)[0].astype(str)
    lw = np.asarray(samples.log_weights)
    levels = {k: predicted_levels(lw[labels == k]) for k in np.unique(labels)}

    def cost(n: int) -> float:
        idx = stratified_allocation(labels, n)
        per_state = np.unique(labels[idx], return_counts=True)
        return float(
            sum(c * levels[k] for k, c in zip(*per_state, strict=True))
            * n_steps
            * n_leapfrog
            * eval_seconds
        )

    lo, hi = min(min_particles, len(labels)), len(labels)
    if cost(hi) <= seconds:
        lo = hi
    while hi - lo > max(1, lo // 50):  # bisection on the particle count
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= seconds else (lo, mid)
    return {
        "n_particles": int(lo),
        "levels": {str(k): int(v) for k, v in levels.items()},
        "max_levels": max(2 * max(levels.values(), default=1), 10),
        "predicted_seconds": cost(lo),
    }


def stratified_allocation(labels: np.ndarray, n: int, min_draws: int = 2) -> np.ndarray:
    """Indices of about ``n`` draws, as equal a number per stratum (label) as the draws allow.

    Strata with fewer than ``min_draws`` draws get none. Within a stratum the first draws
    are taken (the draws are i.i.d., so any fixed choice is a sample of q restricted to it).
    Equal numbers per stratum minimise the error of free-energy differences between them.
    """
    lab = np.asarray(labels).astype(str)
    keys, counts = np.unique(lab, return_counts=True)
    keep = counts >= min_draws
    keys, counts = keys[keep], counts[keep]
    take = np.zeros(len(keys), dtype=np.int64)
    left = int(n)
    open_ = list(range(len(keys)))
    while left > 0 and open_:  # water-filling: equal shares, capped by availability
        share = max(1, left // len(open_))
        for k in list(open_):
            add = min(share, counts[k] - take[k], left)
            take[k] += add
            left -= add
            if take[k] >= counts[k]:
                open_.remove(k)
            if left <= 0:
                break
    idx = [np.flatnonzero(lab == key)[: take[k]] for k, key in enumerate(keys)]
    return np.sort(np.concatenate(idx)) if idx else np.arange(0)


def refine_by_backbone_state(
    gen,
    samples,
    system,
    n_particles: int,
    *,
    n_steps: int = 3,
    n_leapfrog: int = _LEAPFROG,
    max_levels: int = 200,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
):
    """Stratified refinement (:func:`boltzgen.refinement.refine` with ``strata``) of flow
    draws toward the Boltzmann target, one stratum per backbone state (sign pattern of
    every residue's phi, psi for proline: :func:`backbone_state_labels`).

    ``n_particles`` of ``samples`` (i.i.d. draws of ``gen``) are refined, as equal a number
    per state as the draws allow (:func:`stratified_allocation`); the proposal mass q(k) of
    each state comes from all the draws. Returns (RefinedSamples, proposal mass of states
    with too few draws to refine: that mass is missing from the result)."""
    from boltzgen.refinement import refine

    labels = backbone_state_labels(system, samples.positions)[0].astype(str)
    keys, counts = np.unique(labels, return_counts=True)
    mass = {k: float(c) / len(labels) for k, c in zip(keys, counts, strict=True)}
    idx = stratified_allocation(labels, n_particles)
    kept = set(labels[idx])

    def strata(positions: np.ndarray) -> np.ndarray:
        return backbone_state_labels(system, positions)[0].astype(str)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # max_levels reached: in the history
        refined = refine(
            samples[idx],
            gen.energy,
            log_q=gen.log_prob,
            n_steps=n_steps,
            n_leapfrog=n_leapfrog,
            max_levels=max_levels,
            seed=seed,
            strata=strata,
            strata_mass={k: mass[k] for k in kept},
            strata_mass_draws=len(labels),
            progress=progress,
        )
    return refined, float(sum(m for k, m in mass.items() if k not in kept))


def refine_within(
    gen,
    samples,
    seconds: float,
    *,
    eval_seconds: float | None = None,
    n_steps: int = 3,
    n_leapfrog: int = _LEAPFROG,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
):
    """Stratified refinement by backbone state (:func:`refine_by_backbone_state`) of as many
    of ``samples`` (i.i.d. draws of ``gen``) as ``seconds`` pay for (:func:`plan_refinement`
    with ``eval_seconds`` per evaluation, measured on the draws if not given). Returns
    (RefinedSamples, summary): particles, levels (predicted and run), energy evaluations,
    acceptance, ESS before and after, surviving draws, the strata, seconds, and
    dF(CV >= 0 vs < 0) per residue's state dihedral from the strata's log Z."""
    system = gen.system
    t0 = time.perf_counter()
    if eval_seconds is None:
        ok = np.isfinite(samples.log_weights)
        frames = samples.positions[ok] if ok.any() else samples.positions
        eval_seconds = measure_rates(gen, frames)["energy_force_s"]
    rp = plan_refinement(
        samples, system, seconds, eval_seconds, n_steps=n_steps, n_leapfrog=n_leapfrog
    )
    refined, dropped = refine_by_backbone_state(
        gen,
        samples,
        system,
        rp["n_particles"],
        n_steps=n_steps,
        n_leapfrog=n_leapfrog,
        max_levels=rp["max_levels"],
        seed=seed,
        progress=progress,
    )
    h = refined.history
    state_names = backbone_state_labels(system, samples.positions[:1])[1]
    free = {}
    for i, name in enumerate(state_names):
        df, err = strata_free_energy(h["strata"], i)
        free[name] = {"df_kT": df, "err_kT": err}
    summary = {
        "n_samples": len(refined),
        "n_levels": h["n_levels"],
        "n_levels_predicted": rp["levels"],
        "n_energy_evals": int(refined.n_energy_evals),
        "acceptance": float(np.nanmean(h["acceptance"])) if h["acceptance"] else None,
        "ess_before": float(samples.ess),
        # variance-equivalent ESS of the stratified estimate (see refine's history["ess"]);
        # the final weights alone read ~1 within each island after the last resampling
        "ess": float(h["ess"][-1]),
        "ess_final_weights": float(refined.ess),
        "n_unique_ancestors": h["n_unique_ancestors"],
        "strata": h["strata"],
        "log_z": float(refined.log_z),
        "log_z_err": float(refined.log_z_err),
        "proposal_mass_dropped": dropped,
        "free_energies": free,
        "seconds": time.perf_counter() - t0,
        "seconds_planned": float(seconds),
        "seconds_predicted": rp["predicted_seconds"],
    }
    return refined, json_clean(summary)


def _refine_stage(gen, samples, system, config, ckpt, stages, fp, clock, plan):
    """Stratified annealed SMC (:func:`boltzgen.refinement.refine`) from the flow toward the
    Boltzmann target: the strata are the backbone states (sign patterns of phi / psi), each gets
    about the same number of particles (as many as the budget pays for) and its proposal
    mass q(k) from all flow draws; off when ``config.refine`` is false."""
    from boltzgen.refinement import RefinedSamples

    if not config.refine:
        return None, {"status": "off (refine=False)"}
    done = stages.done("refinement", fp, ["refined.h5"])
    if done is not None:
        clock("sampling", 1.0, "refined samples from the checkpoint")
        return RefinedSamples.load(ckpt / "refined.h5"), {**done, "resumed": True}
    stages.start("refinement", fp)
    t0 = time.perf_counter()
    clock("sampling", 0.9, "refining by backbone state")
    refined, summary = refine_within(
        gen,
        samples,
        plan["refine_seconds"],
        eval_seconds=plan["energy_force_s"],
        n_steps=config.refine_steps,
        n_leapfrog=_LEAPFROG,
        seed=config.seed,
        progress=lambda f, m: clock("sampling", 0.9 + 0.1 * f, f"refining: {m}"),
    )
    refined.save(ckpt / "refined.h5")
    result = {
        "status": "done",
        "n_steps": config.refine_steps,
        **summary,
        "wall_time_s": time.perf_counter() - t0,
    }
    stages.save("refinement", fp, result)
    clock("sampling", 1.0, f"refined: ESS {_fmt(result['ess'], '.3f')}")
    return refined, {**result, "resumed": False}


def strata_free_energy(strata: Sequence[dict[str, Any]], position: int) -> tuple[float, float]:
    """dF = F(+) - F(-) in kT (and its standard error) of the ``position``-th character of
    the stratum labels, from the strata's log Z_k and relative errors (as in
    ``refine(...).history["strata"]``): Z_+ = sum of Z_k over labels with ``+`` there."""
    from scipy.special import logsumexp

    groups: dict[str, list[tuple[float, float]]] = {"+": [], "-": []}
    for row in strata:
        groups[str(row["label"])[position]].append((row["log_z"], row["log_z_err"] or 0.0))
    if not groups["+"] or not groups["-"]:
        side = "+" if not groups["+"] else "-"
        return (math.inf if side == "+" else -math.inf), math.inf
    log_z, rel = {}, {}
    for side, rows in groups.items():
        lz = np.array([r[0] for r in rows])
        log_z[side] = float(logsumexp(lz))
        share = np.exp(lz - log_z[side])
        rel[side] = float(np.sqrt(np.sum((share * np.array([r[1] for r in rows])) ** 2)))
    return log_z["-"] - log_z["+"], math.hypot(rel["+"], rel["-"])


def resolve_cvs(system, cvs: Sequence[str] | None) -> list[str]:
    """The backbone dihedral names (``"phi:2"``, ...) that ``cvs`` selects in ``system``:
    ``None`` -> every residue's state dihedral (phi; psi for proline, whose phi is pinned);
    ``"psi"`` -> every residue's psi; ``"phi:2"`` -> that one.
    Raises :class:`InputError` naming the molecule's dihedrals when one is missing."""
    from boltzgen.cv import backbone_dihedrals, parse_cv_name, state_dihedrals

    parsed = {n: parse_cv_name(n) for n in backbone_dihedrals(system)}
    names = list(parsed)
    if cvs is None:
        return list(state_dihedrals(system))
    out: list[str] = []
    for cv in cvs:
        angle, residue = parse_cv_name(cv)
        hits = [n for n, (a, r) in parsed.items() if a == angle and residue in (None, r)]
        if not hits:
            raise InputError(
                f"the molecule has no dihedral {cv!r}; it has {', '.join(names) or 'none'}"
            )
        out += [h for h in hits if h not in out]
    return out


# ============================================================================ analysis + report
def _plot_ess_curve(curve: dict[str, list], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from boltzgen import plots  # noqa: F401  (its import selects the Agg backend)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(curve["n"], np.asarray(curve["ess"]) * 100.0, marker="o", ms=3)
    ax.set(xscale="log", xlabel="samples drawn", ylabel="ESS / %", title="ESS vs samples drawn")
    ax2 = ax.twinx()
    ax2.plot(curve["n"], curve["n_eff"], color="tab:orange", ls="--", label="n_eff")
    ax2.set(ylabel="n_eff")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _analysis(
    system, samples, data_positions, data_lw, config, out: Path, clock
) -> tuple[dict[str, Any], dict[str, Any]]:
    """dF per residue, FES per backbone dihedral, Ramachandran per residue, weights, ESS."""
    from boltzgen import plots
    from boltzgen.analysis import free_energy_difference, free_energy_surface
    from boltzgen.cv import backbone_dihedrals, parse_cv_name

    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Any] = {"ramachandran": {}, "fes": {}}
    dihedrals = backbone_dihedrals(system)
    lw = samples.log_weights
    usable = np.isfinite(lw).any()
    n_data = len(data_positions)
    block = max(1, n_data // 50)
    free: dict[str, Any] = {}
    a, b = (0.0, math.pi), (-math.pi, 0.0)
    names = list(dihedrals)
    state_names = backbone_state_labels(system, data_positions[:1])[1]
    wanted = resolve_cvs(system, config.cvs)
    data_label = "REMD data" if data_lw is None else "metadynamics data (reweighted)"

    def profile(x, values, **kw):  # 1-D FES on the circle with bootstrap errors
        bootstrap = min(100, config.n_bootstrap)
        return free_energy_surface(
            x,
            cvs=values,
            bins=36,
            range=(-math.pi, math.pi),
            n_bootstrap=bootstrap,
            seed=config.seed,
            **kw,
        )

    for i, name in enumerate(names):
        d = dihedrals[name]
        clock("analysis", 0.1 + 0.7 * i / max(1, len(names)), f"free energies {name}")
        v = d(samples.positions)
        vd = d(data_positions)
        curves = {}
        if usable:
            curves["flow (reweighted)"] = profile(samples, v)
        curves[data_label] = profile(data_positions, vd, block_size=block, log_weights=data_lw)
        path = plot_dir / f"fes_{name.replace(':', '_')}.png"
        plots.free_energy_profile(curves, path, xlabel=f"{name} / rad")
        figs["fes"][name] = str(path.relative_to(out))
        angle, residue = parse_cv_name(name)
        psi = dihedrals.get(f"psi:{residue}") if angle == "phi" else None
        if psi is not None:
            panels = {
                data_label: (vd, psi(data_positions), data_lw),
                "flow (unweighted)": (v, psi(samples.positions), None),
            }
            if usable:
                panels["flow (reweighted)"] = (v, psi(samples.positions), lw)
            path = plot_dir / f"ramachandran_{residue}.png"
            plots.ramachandran(panels, path)
            figs["ramachandran"][str(residue)] = str(path.relative_to(out))
        if name not in wanted:
            continue
        row: dict[str, Any] = {"residue": residue, "angle": angle}
        strata = getattr(samples, "history", {}).get("strata")
        if usable and strata and name in state_names:
            # stratified refinement: dF from the strata's log Z (errors: island spread and
            # the binomial error of the proposal masses); the particle bootstrap beside it
            # ignores that descendants of one draw are correlated
            df, err = strata_free_energy(strata, state_names.index(name))
            df_b, err_b = free_energy_difference(
                samples, v, a, b, n_bootstrap=config.n_bootstrap, seed=config.seed
            )
            row.update(df_kT=df, err_kT=err, method="strata log Z", df_reweighted_kT=df_b)
            row.update(err_reweighted_kT=err_b)
        elif usable:
            df, err = free_energy_difference(
                samples, v, a, b, n_bootstrap=config.n_bootstrap, seed=config.seed
            )
            row.update(df_kT=df, err_kT=err, method="reweighted samples (bootstrap)")
        else:
            row.update(df_kT=None, err_kT=None)
        df_d, err_d = free_energy_difference(
            data_positions,
            vd,
            a,
            b,
            n_bootstrap=config.n_bootstrap,
            block_size=block,
            log_weights=data_lw,
        )
        row.update(
            df_data_kT=df_d,
            err_data_kT=err_d,
            data_fraction_positive=float(np.mean(vd >= 0)),
        )
        if usable:
            w = samples.normalized_weights
            row["flow_fraction_positive_unweighted"] = float(np.mean(v >= 0))
            row["flow_fraction_positive_weighted"] = float(np.sum(w[v >= 0]))
        free[name] = row
    clock("analysis", 0.85, "weights and ESS curve")
    plots.log_weight_histogram(
        lw, plot_dir / "log_weights.png", ess=samples.ess if usable else None
    )
    figs["log_weights"] = "plots/log_weights.png"
    curve = ess_curve(lw) if usable else {"n": [], "ess": [], "n_eff": []}
    if usable:
        _plot_ess_curve(curve, plot_dir / "ess_curve.png")
        figs["ess_curve"] = "plots/ess_curve.png"
    return {"free_energies": free, "ess_curve": curve}, figs


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _refine_line(r: dict[str, Any]) -> str:
    if r.get("status") != "done":
        return f"Refinement: {r.get('status')}."
    return (
        f"Refinement (stratified SMC by backbone state): {r['n_samples']:,} particles, "
        f"{r['n_levels']} levels at most, {r['n_energy_evals']:,} energy evaluations, "
        f"acceptance {_fmt(r.get('acceptance'))}; ESS {_fmt(r.get('ess_before'), '.3f')} (flow) "
        f"-> {_fmt(r.get('ess'), '.3f')} (refined, variance-equivalent over the strata); "
        f"{r['n_unique_ancestors']:,} distinct flow draws survive."
    )


def _data_section(d: dict[str, Any]) -> list[str]:
    """The report's paragraph on how the training data were made."""
    if d.get("sampler") == "metad":
        crossings = ", ".join(f"{k}: {v}" for k, v in d["sign_changes"].items())
        return [
            "",
            "## Training data: metadynamics with a frozen bias",
            "",
            f"Well-tempered metadynamics over {', '.join(d['dihedrals'])} (bias factor "
            f"{d['bias_factor']:g}) learned a bias for {d['n_learning_steps']:,} steps, then "
            f"{d['n_steps']:,} steps were sampled with it frozen ({d['simulated_ns']:.2f} ns in "
            f"all, calibrated at {d['calibration']['steps_per_second']:,.0f} steps/s): "
            f"{d['n_frames']:,} frames, each weighted exactly by exp(V/kT) (ESS of the weights "
            f"{100 * d['ess']:.0f} %); sign changes along the record: {crossings}.",
            "",
        ]
    lad = d["ladder"]
    acc = ", ".join(_fmt(x) for x in d["acceptance"])
    return [
        "",
        "## Training data: temperature replica exchange",
        "",
        f"{lad['n_replicas']} replicas, geometric {lad['t_min_K']:.0f}-{lad['t_max_K']:.0f} K "
        f"(dof {lad['dof']}, neighbour ratio {lad['neighbour_ratio']:.3f}; predicted "
        f"acceptance {lad['predicted_acceptance']:.2f} for a target of "
        f"{lad['target_acceptance']:.2f}). Measured neighbour acceptance: {acc} "
        f"(mean {_fmt(d['mean_acceptance'])}).",
        "",
        f"{d['n_steps_per_replica']:,} production steps per replica after "
        f"{d['n_equilibration_steps']:,} equilibration steps "
        f"({d['simulated_ns_per_replica']:.2f} ns per replica, calibrated at "
        f"{d['calibration']['steps_per_second']:,.0f} steps/s); {d['n_frames']:,} frames of "
        f"the {lad['t_min_K']:.0f} K replica, visited by {d['walkers_at_target']} walkers.",
        "",
    ]


def _report(summary: dict[str, Any], figs: dict[str, Any]) -> str:
    s = summary
    mol = s["system"]
    lines = [
        f"# boltzgen run: {mol['name']}",
        "",
        f"{mol['n_atoms']} atoms, {mol['n_residues']} residues, dimension {mol['dim']} "
        f"(3n - 6), solvent {mol['solvent']}, {mol['temperature_K']:g} K, force field "
        f"{', '.join(mol['forcefield'])}.",
        "",
        f"**ESS {100 * (s['ess'] or 0):.2f} %** of {s['n_samples']:,} samples; clash fraction "
        f"{_fmt(s['clash']['clash_fraction'], '.4f')}; total wall time "
        f"{s['wall_time_s']['total']:.0f} s of a {s['budget']['total_seconds']:.0f} s budget.",
        "",
        "## Budget and wall time",
        "",
        "| stage | share | budget (s) | wall time (s) | from checkpoint |",
        "|---|---|---|---|---|",
    ]
    for stage in STAGES:
        b = s["budget"]["split"].get(stage, {})
        st = s["stages"].get(stage, {})
        lines.append(
            f"| {stage} | {_fmt(b.get('share'), '.0%') if b else '-'} | "
            f"{_fmt(b.get('seconds'), '.0f') if b else '-'} | "
            f"{_fmt(s['wall_time_s'].get(stage), '.1f')} | "
            f"{'yes' if st.get('resumed') else 'no'} |"
        )
    lines.append("")
    lines.append("The system build is counted in the analysis share (the rest of the budget).")
    lines += _data_section(s["data"])
    lines += [
        "Frames are balanced over the sign patterns of every residue's state dihedral "
        f"({', '.join(s['balance']['dihedrals']) or 'no backbone'}; phi, psi for proline; "
        "+ is angle >= 0); every populated "
        f"pattern gets at least {s['balance']['min_share']:.0%} of the training weight:",
        "",
        "| pattern | frames | data share | weight share |",
        "|---|---|---|---|",
    ]
    for row in s["balance"]["states"]:
        lines.append(
            f"| `{row['state'] or '-'}` | {row['n_frames']} | {row['data_share']:.4f} | "
            f"{row['weight_share']:.4f}{'' if row['populated'] else ' (too few frames)'} |"
        )
    fl = s["flow"]
    lines += [
        "",
        "## Flow",
        "",
        f"{fl['flow']} flow, {fl['n_layers']} coupling layers, conditioners "
        f"{' x '.join(str(h) for h in fl['hidden'])}, {fl['n_parameters']:,} parameters, "
        f"lr {fl['lr']:g} (rule for dim {fl['dim']}: {fl['rule']['n_layers']} layers, "
        f"{list(fl['rule']['hidden'])}). Trained {fl['epochs_run']} epochs in "
        f"{_fmt(fl.get('wall_time_s'), '.0f')} s (stop: {fl['stop_reason']}); best validation "
        f"NLL {_fmt(fl['best_val_nll'])}.",
        "",
        "![training](training.png)",
        "",
        "## Samples and weights",
        "",
        f"Flow: {s['sampling']['n_samples']:,} draws, ESS "
        f"{100 * (s['sampling'].get('ess') or 0):.2f} % (n_eff "
        f"{_fmt(s['sampling'].get('n_eff'), '.0f')}). Clash fraction "
        f"{_fmt(s['clash']['clash_fraction'], '.4f')}: overlapping atoms (non-bonded, beyond "
        f"1-3, closer than {s['clash']['distance_nm']} nm) "
        f"{_fmt(s['clash']['overlap_fraction'], '.4f')}, infinite energy "
        f"{_fmt(s['clash']['infinite_energy_fraction'], '.4f')}.",
        "",
        _refine_line(s["refine"]),
        "",
        f"![log-weights]({figs['log_weights']})",
    ]
    if s["refine"].get("strata"):
        lines += [
            "",
            "| stratum | particles | proposal mass | log Z | rel. err | levels | ESS | evals |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in s["refine"]["strata"]:
            lines.append(
                f"| `{r['label'] or '-'}` | {r['n']} | {_fmt(r['mass'], '.4f')} | "
                f"{_fmt(r['log_z'])} | {_fmt(r['log_z_err'], '.3f')} | {r['n_levels']} | "
                f"{_fmt(r['ess'], '.3f')} | {r['n_energy_evals']:,} |"
            )
    if "ess_curve" in figs:
        lines += ["", f"![ESS curve]({figs['ess_curve']})"]
    lines += [
        "",
        "## Free energies",
        "",
        "dF = F(CV >= 0) - F(CV < 0) in kT. Refined: from the log Z of the refinement's "
        "strata (one SMC run per backbone state; error from the islands' spread and the "
        "proposal masses); otherwise the flow samples reweighted (bootstrap error). Data: "
        "the training frames alone (REMD: the target replica; metadynamics: reweighted by "
        "exp(V/kT); block-bootstrap error).",
        "",
        "| CV | dF / kT | method | dF data / kT | CV >= 0 in data (frames) |",
        "|---|---|---|---|---|",
    ]
    for name, row in s["free_energies"].items():
        lines.append(
            f"| {name} | {_fmt(row['df_kT'])} +- {_fmt(row['err_kT'])} | "
            f"{row.get('method', '-')} | "
            f"{_fmt(row['df_data_kT'])} +- {_fmt(row['err_data_kT'])} | "
            f"{row['data_fraction_positive']:.4f} |"
        )
    if not s["free_energies"]:
        lines.append("| (no backbone dihedral) | | | |")
    if figs["ramachandran"]:
        lines += ["", "### Ramachandran plots", ""]
        lines += [f"![residue {k}]({v})" for k, v in figs["ramachandran"].items()]
    if figs["fes"]:
        lines += ["", "### Free-energy profiles (bands: bootstrap errors)", ""]
        lines += [f"![{k}]({v})" for k, v in figs["fes"].items()]
    if s.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in s["warnings"]]
    return "\n".join(lines) + "\n"


def run_pipeline(
    pdb_or_system: Any,
    out_dir: str | os.PathLike[str],
    config: PipelineConfig | dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    *,
    stage_progress: StageProgressFn | None = None,
) -> dict[str, Any]:
    """From a PDB (path or text) or a :class:`~boltzgen.systems.System` to results.

    Args:
        pdb_or_system: a PDB with hydrogens, or a System (see :class:`PipelineConfig` for how
            its solvent / temperature / force field combine with the config's).
        out_dir: receives ``report.md``, ``summary.json``, ``model.pt``, ``samples.h5``
            (mdtraj-readable, with the weights), ``history.json``, ``training.png``,
            ``plots/`` and, after refinement, ``flow_samples.h5`` (the unrefined draws).
        config: :class:`PipelineConfig` or a dict of its fields.
        progress: ``progress(fraction, message)`` overall (stages weighted by their budget
            shares); messages start with the stage name.
        checkpoint_dir: stage records and files (``remd.h5`` or ``metad.npz``, ``train.pt``,
            ``training/model.pt``, ``samples.h5``); default ``out_dir/checkpoint``. Finished
            stages with the same inputs are skipped on a rerun.
        stage_progress: ``stage_progress(stage, fraction_of_stage, message)`` (the CLI's bars).

    Returns: the summary (also ``summary.json``): ESS, dF per residue with errors, clash
    fraction, wall time per stage, budget split, data (REMD acceptance or metadynamics
    weights), flow size, files.
    """
    t_start = time.perf_counter()
    config = _make(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else out / "checkpoint"
    ckpt.mkdir(parents=True, exist_ok=True)
    split = budget_split(config)
    clock = _Clock(split, progress, stage_progress)
    stages = _Stages(ckpt)
    wall: dict[str, float] = {}
    notes: list[str] = []

    # ---- system
    clock("system", 0.0, "building the system")
    t0 = time.perf_counter()
    system = _resolve_system(pdb_or_system, config)
    wall["system"] = time.perf_counter() - t0
    clock("system", 1.0, f"{system.n_atoms} atoms, {system.solvent}, {system.temperature:g} K")
    spec = system.to_spec()
    resolve_cvs(system, config.cvs)  # an unknown CV fails now, not after the budget is spent

    # ---- data
    fp_data = _fingerprint(spec, _stage_fields(config, _DATA_FIELDS))
    t0 = time.perf_counter()
    data_rec = _data_stage(system, config, split, ckpt, stages, fp_data, clock)
    wall["data"] = time.perf_counter() - t0
    positions, data_forces, data_lw = load_stage_data(ckpt, data_rec)
    if (data_rec.get("min_acceptance") or 1.0) < 0.1:
        notes.append(
            f"REMD neighbour acceptance as low as {data_rec['min_acceptance']:.2f}: the replicas "
            "mix poorly; lower t_max or raise target_acceptance"
        )

    # ---- training
    fp_train = _fingerprint(fp_data, _stage_fields(config, _TRAIN_FIELDS))
    t0 = time.perf_counter()
    energy = _energy_model(system, config)
    gen, train_rec, balance, plan = _train_stage(
        system,
        energy,
        config,
        split,
        ckpt,
        stages,
        fp_train,
        clock,
        positions,
        data_forces,
        data_lw,
        data_rec.get("wall_time_s", wall["data"]) + wall["system"],
    )
    wall["training"] = time.perf_counter() - t0

    # ---- sampling (+ refinement)
    fp_sample = _fingerprint(fp_train, _stage_fields(config, _SAMPLE_FIELDS))
    t0 = time.perf_counter()
    flow_samples, sample_rec = _sample_stage(
        gen, system, config, split, ckpt, stages, fp_sample, clock, plan
    )
    refined, refine_rec = _refine_stage(
        gen, flow_samples, system, config, ckpt, stages, fp_sample, clock, plan
    )
    clock("sampling", 1.0, f"{len(flow_samples):,} samples")
    wall["sampling"] = time.perf_counter() - t0
    final = refined if refined is not None else flow_samples

    # ---- analysis and report
    t0 = time.perf_counter()
    clock("analysis", 0.0, "clash check")
    clash = clash_fraction(final if refined is None else flow_samples, system.topology)
    results, figs = _analysis(system, final, positions, data_lw, config, out, clock)
    clock("analysis", 0.9, "writing files")
    final.save(out / "samples.h5")
    if refined is not None:
        shutil.copyfile(ckpt / "samples.h5", out / "flow_samples.h5")
    for name in ("model.pt", "history.json", "training.png"):
        src = ckpt / "training" / name
        if src.exists():
            shutil.copyfile(src, out / name)
    ess = float(final.ess) if np.isfinite(final.log_weights).any() else float("nan")
    if not ess > 0.001:
        notes.append(
            f"ESS {100 * ess:.3f} %: the weighted estimates rest on very few samples; "
            "raise the budget (longer sampling and training)"
        )
    for name, row in results["free_energies"].items():
        df, err, dd, de = (row.get(k) for k in ("df_kT", "err_kT", "df_data_kT", "err_data_kT"))
        finite = all(isinstance(v, float) and math.isfinite(v) for v in (df, err, dd, de))
        if finite and abs(df - dd) > 2.0 * math.hypot(err, de):
            notes.append(
                f"dF {name}: the samples give {df:.2f} +- {err:.2f} kT but the training "
                f"data {dd:.2f} +- {de:.2f}: more than 2 sigma apart. Either the flow misses "
                "part of a state (its error bar cannot see that) or the data are not "
                "converged; raise the budget"
            )
    if clash["clash_fraction"] > 0.1:
        notes.append(
            f"{100 * clash['clash_fraction']:.1f} % of the flow samples clash or have infinite "
            "energy: the flow is undertrained for this molecule"
        )
    wall["analysis"] = time.perf_counter() - t0
    wall["total"] = time.perf_counter() - t_start
    res_names = {r.resSeq for r in system.topology.residues}
    summary: dict[str, Any] = {
        "system": {
            "name": _system_name(pdb_or_system, system),
            "n_atoms": system.n_atoms,
            "n_residues": len(res_names),
            "dim": 3 * system.n_atoms - 6,
            "solvent": system.solvent,
            "temperature_K": float(system.temperature),
            "forcefield": list(system.forcefield),
        },
        "config": config.model_dump(mode="json"),
        "budget": {"total_seconds": 60.0 * config.budget_minutes, "split": split},
        "ess": ess,
        "n_samples": len(final),
        "n_eff": float(final.n_eff) if np.isfinite(ess) else None,
        "free_energies": results["free_energies"],
        "clash_fraction": clash["clash_fraction"],
        "clash": clash,
        "data": {k: v for k, v in data_rec.items() if k not in ("resumed",)},
        "balance": balance,
        "flow": {k: v for k, v in train_rec.items() if k != "resumed"},
        "sampling": {**{k: v for k, v in sample_rec.items() if k != "resumed"}, "plan": plan},
        "refine": {k: v for k, v in refine_rec.items() if k != "resumed"},
        "ess_curve": results["ess_curve"],
        "wall_time_s": wall,
        "stages": {
            "system": {"resumed": False},
            "data": {"resumed": bool(data_rec.get("resumed"))},
            "training": {"resumed": bool(train_rec.get("resumed"))},
            "sampling": {"resumed": bool(sample_rec.get("resumed"))},
            "refinement": {"resumed": bool(refine_rec.get("resumed", False))},
            "analysis": {"resumed": False},
        },
        "warnings": notes,
        "checkpoint_dir": str(ckpt),
        "files": {
            "report": "report.md",
            "summary": "summary.json",
            "model": "model.pt",
            "samples": "samples.h5",
            "plots": figs,
        },
    }
    (out / "report.md").write_text(_report(summary, figs))
    _write_json(out / "summary.json", summary)
    clock("analysis", 1.0, "done")
    return json_clean(summary)


def _system_name(pdb_or_system: Any, system) -> str:
    if isinstance(pdb_or_system, str | os.PathLike) and len(str(pdb_or_system)) < 4096:
        p = Path(pdb_or_system)
        if "\n" not in str(pdb_or_system) and p.suffix:
            return p.name
    seq = "-".join(r.name for r in system.topology.residues)
    return seq[:80] if seq else f"{system.n_atoms}-atom molecule"
