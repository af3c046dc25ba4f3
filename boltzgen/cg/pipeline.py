"""The whole coarse-graining pipeline in one call: map, teacher, forces, student, CG MD, scores.

``train_and_simulate(frames, mapping, out_dir, config, progress=...)`` with ``config.method``

* ``"flow"`` (flow matching, Koehler et al. 2023): a smooth flow is fitted to the mapped
  frames by maximum likelihood (no forces needed), its forces kT grad log q on
  ``n_teacher_samples`` flow samples (outliers filtered) are the force-matching targets;
* ``"forces"`` (classical force matching): the targets are the mapped all-atom forces of the
  frames (the data must carry forces);

then the CG force field is trained by :func:`~boltzgen.cg.forcefield.fit_forces`, simulated
by batched Langevin MD and scored on the CG dihedrals against a reference. Files written to
Weighted frames, biased MD with relative ``frame_weights`` (e.g. exp(V/kT) of
:func:`boltzgen.metadynamics.metadynamics`, which reaches the rare basins) or weighted i.i.d.
samples of a Boltzmann generator (``Samples`` / ``RefinedSamples`` or their HDF5 files, whose
log-weights are read with the frames; :mod:`boltzgen.cg.frames`), stand for the equilibrium
distribution in every stage: the teacher flow is fitted by weighted likelihood, the state
shares that calibrate it are weighted, the student's priors are fitted to frames resampled by
weight, classical force matching weighs each frame's force error, CG MD starts from frames
drawn in proportion to the weights, and the default scoring reference (the "data") is the
weighted frames. Frames of weight zero (clashing flow samples) are dropped.

Files written to
``out_dir``: ``forcefield.pt``, ``teacher.pt`` (flow method), ``cg_traj.h5`` (all walkers
concatenated, mdtraj HDF5 with the bead topology), ``metrics.json``, ``fes.png``,
``summary.json``. The returned summary is JSON-able: non-finite numbers (e.g. dF = inf when
the model never visits phi > 0) become ``None``, in the files as well.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from annotated_types import Interval, Len

from boltzgen.cg.basins import (
    balanced_starts,
    state_column,
    state_labels,
    state_share_weights,
    target_state_shares,
    walker_record,
)
from boltzgen.cg.distill import student_record, teacher_targets
from boltzgen.cg.forcefield import CGForceField, fit_forces
from boltzgen.cg.frames import (
    check_weights,
    load_frames,
    load_weighted_frames,
    training_frames,
    weights_from_log,
)
from boltzgen.cg.mapping import Mapping
from boltzgen.cg.md import simulate_cg
from boltzgen.cg.metrics import evaluate
from boltzgen.cg.plots import fes_plot
from boltzgen.cg.schedule import epochs_for
from boltzgen.errors import InputError, ShapeError
from boltzgen.jsonable import json_clean

__all__ = [
    "CGConfig",
    "load_frames",
    "run_pipeline",
    "run_simulation",
    "simulate_and_score",
    "train_and_simulate",
]

METHODS = ("flow", "forces")
Progress = Callable[[float, str], None]


#: Upper limits of the integer options (a typo such as 1e9 walkers fails at once).
_LIMITS = {
    "max_frames": 10_000_000,
    "teacher_epochs": 100_000,
    "teacher_steps": 10_000_000,
    "teacher_min_steps": 10_000_000,
    "teacher_patience_steps": 10_000_000,
    "teacher_batch_size": 65_536,
    "teacher_layers": 64,
    "teacher_components": 64,
    "n_teacher_samples": 10_000_000,
    "balance_oversample": 100,
    "epochs": 100_000,
    "steps": 10_000_000,
    "batch_size": 65_536,
    "n_walkers": 100_000,
    "n_steps": 100_000_000,
    "report_interval": 1_000_000,
    "discard_frames": 10_000_000,
    "seed": 2**31 - 1,
    "bins": 1000,
}


# layer widths; the constraints reach the job's JSON schema (pydantic reads them off the dataclass)
Widths = Annotated[list[Annotated[int, Interval(ge=1, le=4096)]], Len(1, 8)]


@dataclass
class CGConfig:
    """Options of :func:`train_and_simulate` (JSON-able). Units: ps, 1/ps, (kJ/mol/nm)^2."""

    method: str = "flow"
    max_frames: int | None = None  # evenly strided subset of the frames
    # teacher (flow method)
    teacher_epochs: int = 100
    teacher_steps: int | None = None  # if set: epochs = ceil(steps / batches per epoch)
    # length and early-stopping patience in minibatch steps, as epochs shrink with the frames:
    # at 2,000 frames (8 batches an epoch) 100 epochs and a patience of 8 stopped the teacher
    # after about 260 steps, KL 0.045 against 0.016 with these floors (ACE-PRO-NME;
    # benchmarks/RESULTS.md, 2026-12-05, sixth session); at 20,000 frames they change nothing
    teacher_min_steps: int = 6000
    teacher_patience_steps: int = 560
    teacher_batch_size: int = 256
    teacher_lr: float = 1e-3
    teacher_layers: int = 4
    teacher_hidden: Widths = field(default_factory=lambda: [64, 64])
    teacher_components: int = 8
    teacher_tails: str = "none"
    # the teacher's last share (or from its early stop): best weights, every frame, the rate
    # annealed to 0 (boltzgen.generator.training.fit's finish_fraction); its surface against
    # the reference was as good or better for 4 of 4 teachers (ACE-PRO-NME seed 0: PMF MSE
    # 0.046 -> 0.021; benchmarks/RESULTS.md, 2026-12-05, fifth session)
    teacher_finish: float = 0.25
    # > 0: the teacher also matches the frames' mapped all-atom forces (its loss is
    # nll + teacher_force_weight * mean((grad log q - F_mapped/kT)^2), kT/nm per component):
    # the same frames' forces, as classical force matching uses them (needs forces). Off by
    # default: at 5,000 ACE-PRO-NME frames, 1e-4 left the teacher's KL within the seed spread
    # at 5x the time, 1e-3 raised it from 0.010 to 0.06, 1e-2 to 0.19 (RESULTS.md, 2026-12-06)
    teacher_force_weight: float = 0.0
    # "torsions": the force term compares the forces along the teacher's Z-matrix torsions
    # only, out of reach of the mapped forces' noise in the stiff bonds and angles, each
    # torsion's residual over its forces' rms: weight 1 is their Gaussian log-likelihood.
    # At 5,000 ACE-PRO-NME frames weight 1 lowered the teacher's KL 0.0098/0.0105 ->
    # 0.0092/0.0098 (two seeds) at ~4x the teacher's time, weight 10 raised it to 0.013-0.014
    # (RESULTS.md, 2026-12-06, tenth session): off by default
    teacher_force_components: str = "cartesian"
    n_teacher_samples: int = 100_000
    force_filter_factor: float | None = 50.0
    max_msf: float | None = None
    # basin balance (flow method; boltzgen.cg.distill)
    calibrate_states: bool = True
    balance_min_share: float | None = 0.25
    balance_oversample: int = 4
    energy_weight: float = 1000.0
    # CG MD walkers spread over the states, weighted back to the student's shares: unbiased
    # without crossings, but noisier than data starts when walkers cross (ADP: 3 per 100 ps)
    balanced_starts: bool = False
    # student
    hidden: Widths = field(default_factory=lambda: [128, 128, 128])
    activation: str = "tanh"
    repulsion: bool = False
    epochs: int = 50
    steps: int | None = None  # if set: epochs = ceil(steps / batches per epoch)
    batch_size: int = 256
    lr: float = 3e-3
    lr_final: float = 1e-5
    val_fraction: float = 0.1
    # CG MD
    n_walkers: int = 100
    # 1 fs: at 2 fs a student's basin balance was off by 0.7 kT against its own 1 fs run and
    # its importance-sampled share (benchmarks/RESULTS.md, 2026-12-05); 40 ps per walker
    n_steps: int = 40_000
    timestep: float = 0.001
    friction: float = 1.0
    report_interval: int = 100
    discard_frames: int = 0  # per walker, before scoring
    seed: int = 0
    bins: int = 60

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.report_interval < 1:  # checked first: the frame count below divides by it
            raise InputError(f"report_interval must be >= 1, got {self.report_interval!r}")
        if self.n_walkers < 1 or self.n_steps < self.report_interval:
            raise InputError("need n_walkers >= 1 and n_steps >= report_interval")
        if self.discard_frames >= self.n_steps // self.report_interval:
            raise InputError("discard_frames leaves no CG MD frames to score")
        for name, hi in _LIMITS.items():
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool)):
                raise InputError(f"{name} must be an integer, got {v!r}")
            if v is not None and not 0 <= v <= hi:
                raise InputError(f"{name} must be in [0, {hi:,}], got {v}")
        if self.balance_min_share is not None and not 0 <= self.balance_min_share < 1:
            raise InputError(f"balance_min_share must be in [0, 1), got {self.balance_min_share}")
        names = ("teacher_lr", "lr", "lr_final", "timestep", "friction", "val_fraction")
        for name in (*names, "energy_weight", "teacher_force_weight"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a finite non-negative number, got {v!r}")
        if self.teacher_force_components not in ("cartesian", "torsions"):
            raise InputError(
                "teacher_force_components must be 'cartesian' or 'torsions', "
                f"got {self.teacher_force_components!r}"
            )
        if not (0 < self.timestep <= 0.05 and 0 <= self.val_fraction < 1):
            raise InputError("need 0 < timestep <= 0.05 ps and 0 <= val_fraction < 1")
        if not (isinstance(self.teacher_finish, int | float) and 0 <= self.teacher_finish < 1):
            raise InputError(f"teacher_finish must be in [0, 1), got {self.teacher_finish!r}")
        for name in ("teacher_hidden", "hidden"):
            widths = getattr(self, name)
            if not (1 <= len(widths) <= 8 and all(1 <= int(w) <= 4096 for w in widths)):
                raise InputError(f"{name} must hold 1-8 widths in [1, 4096], got {widths}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CGConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown CG config option(s): {', '.join(unknown)}")
        return cls(**d)


def _reference_dihedrals(
    reference: Any, reference_weights: Any, mapping: Mapping, cg
) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 2) CG dihedrals of the reference and their weights (given, or the reference's own
    log-weights for weighted samples, or None)."""
    if isinstance(reference, np.ndarray) and reference.ndim == 2 and reference.shape[1] == 2:
        d = reference  # already (N, 2) dihedral values
        lw = None
    else:
        x, _, lw = load_weighted_frames(reference)
        d = cg.dihedrals(mapping.map_positions(x))[:, :2]
    if reference_weights is not None:
        return d, check_weights(reference_weights, len(d), "reference_weights")
    return d, None if lw is None else weights_from_log(lw, len(d), "reference log_weights")


def simulate_and_score(
    ff: CGForceField,
    cg,
    starts_from: np.ndarray,
    cfg: CGConfig,
    out: Path,
    reference_dihedrals: np.ndarray,
    *,
    reference_weights: Any = None,
    start_weights: Any = None,
    state_shares: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Batched CG Langevin MD with ``ff`` (``cfg.n_walkers`` walkers started at random frames
    of ``starts_from`` (N, n_beads, 3) nm, drawn in proportion to ``start_weights`` (N,) if
    given; ``cfg.n_steps`` steps) and its scores against the reference CG dihedrals (N, 2)
    rad. With ``state_shares`` (the force field's equilibrium share of each backbone state)
    and ``cfg.balanced_starts``, the walkers start spread equally over the states and carry
    weights that restore the shares (:func:`boltzgen.cg.basins.balanced_starts`); the scores
    and ``cg_weights.npy`` use them. Writes ``cg_traj.h5``, ``metrics.json`` and ``fes.png``
    into ``out``; returns {"md", "metrics", "files"} (JSON-able)."""
    report = progress or (lambda _f, _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report(0.0, "CG Langevin MD")
    rng = np.random.default_rng(cfg.seed)
    walker_w = None
    labels = state_labels(cg.topology, starts_from) if cfg.balanced_starts and state_shares else []
    if len(np.unique(labels)) > 1:
        idx, walker_w = balanced_starts(labels, cfg.n_walkers, state_shares, rng, start_weights)
    else:
        p = None if start_weights is None else np.asarray(start_weights, float)
        idx = rng.choice(len(starts_from), cfg.n_walkers, p=None if p is None else p / p.sum())
    starts = starts_from[idx]
    t0 = time.perf_counter()
    traj = simulate_cg(
        ff,
        starts,
        cfg.n_steps,
        masses=cg.masses,
        temperature=cg.temperature,
        timestep=cfg.timestep,
        friction=cfg.friction,
        report_interval=cfg.report_interval,
        seed=cfg.seed,
        topology=cg.topology,
        progress=lambda f, m: report(0.8 * f, m),
    )
    md_time = time.perf_counter() - t0
    files = {"trajectory": str(traj.save(out / "cg_traj.h5")[0])}
    n_frames = int(traj.positions.shape[1])
    md = {
        "n_walkers": traj.n_walkers,
        "n_frames_per_walker": n_frames,
        "n_steps": cfg.n_steps,
        "timestep_ps": cfg.timestep,
        "simulated_ns_total": traj.n_walkers * cfg.n_steps * cfg.timestep / 1000.0,
        "time_s": md_time,
        "frames_per_s": traj.n_walkers * n_frames / max(md_time, 1e-9),
        "steps_per_s": traj.n_walkers * cfg.n_steps / max(md_time, 1e-9),
    }
    report(0.85, "evaluation")
    kept = traj.positions[:, cfg.discard_frames :]
    md["basin"] = walker_record(cg.topology, kept, starts, walker_weights=walker_w)
    scored = kept.reshape(-1, cg.n_beads, 3)
    frame_w = None
    if walker_w is not None:
        frame_w = np.repeat(walker_w, kept.shape[1])
        np.save(out / "cg_weights.npy", frame_w)
        files["weights"] = str(out / "cg_weights.npy")
    model_d = cg.dihedrals(scored)[:, :2]
    metrics = json_clean(
        evaluate(
            reference_dihedrals,
            model_d,
            cg.temperature,
            bins=cfg.bins,
            reference_weights=reference_weights,
            model_weights=frame_w,
            df_column=state_column(cg),
        )
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    files["metrics"] = str(out / "metrics.json")
    files["fes_plot"] = str(
        fes_plot(
            {
                "reference": (reference_dihedrals, reference_weights),
                f"CG ({cfg.method})": model_d if frame_w is None else (model_d, frame_w),
            },
            out / "fes.png",
            cg.temperature,
        )
    )
    report(1.0, "scored")
    return {"md": json_clean(md), "metrics": metrics, "files": files}


def run_simulation(
    forcefield: CGForceField | str | Path,
    frames: Any,
    mapping: Mapping,
    out_dir: str | Path,
    config: CGConfig | dict[str, Any] | None = None,
    *,
    frame_weights: Any = None,
    frame_log_weights: Any = None,
    reference: Any = None,
    reference_weights: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """CG MD with a trained force field (object or ``forcefield.pt``), walkers started at the
    mapped ``frames`` (all-atom, as in :func:`train_and_simulate`; drawn in proportion to
    their weights if they carry any), scored against ``reference`` (default: the weighted
    frames).
    Only the MD and scoring fields of ``config`` are used. Writes ``cg_traj.h5``, ``metrics.json``, ``fes.png``, ``summary.json``; returns the summary."""
    cfg = config if isinstance(config, CGConfig) else CGConfig.from_dict(config)
    ff = forcefield if isinstance(forcefield, CGForceField) else CGForceField.load(forcefield)
    if ff.n_beads != mapping.n_beads:
        raise InputError(
            f"the force field has {ff.n_beads} beads but the mapping {mapping.n_beads}"
        )
    out = Path(out_dir)
    x_aa, _, w_aa = training_frames(frames, None, frame_weights, frame_log_weights, mapping)
    cg = mapping.cg_system()
    x_cg = np.asarray(mapping.map_positions(x_aa), dtype=np.float32)
    ref_d, ref_w = _scoring_reference(reference, reference_weights, x_aa, w_aa, mapping, cg)
    t0 = time.perf_counter()
    scored = simulate_and_score(
        ff,
        cg,
        x_cg,
        cfg,
        out,
        ref_d,
        reference_weights=ref_w,
        start_weights=w_aa,
        progress=progress,
    )
    summary = json_clean(
        {
            "n_beads": cg.n_beads,
            "temperature_K": cg.temperature,
            "md": scored["md"],
            "metrics": scored["metrics"],
            "files": {**scored["files"], "summary": str(out / "summary.json")},
            "time_s": time.perf_counter() - t0,
        }
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def train_and_simulate(
    frames: Any,
    mapping: Mapping,
    out_dir: str | Path,
    config: CGConfig | dict[str, Any] | None = None,
    *,
    forces: Any = None,
    frame_weights: Any = None,
    frame_log_weights: Any = None,
    reference: Any = None,
    reference_weights: Any = None,
    state_shares: Any = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a CG force field and simulate and score it (see the module docstring); return a
    JSON-able summary.

    Args:
        frames: all-atom training frames: positions (N, n_atoms, 3) nm, mdtraj.Trajectory,
            MD record or MD file (forces are read from records and files), or weighted
            samples: a ``Samples`` / ``RefinedSamples`` or its HDF5 file (``refined.h5`` of
            ``boltzgen run``), whose log-weights weigh the frames in every stage.
        mapping: the :class:`~boltzgen.cg.mapping.Mapping`.
        config: :class:`CGConfig` or a dict of its fields.
        forces: all-atom forces (N, n_atoms, 3) kJ/mol/nm (method "forces" only; overrides
            the forces read from ``frames``).
        frame_weights: (N,) relative weights >= 0 of biased frames (e.g. ``exp(log_weights)``
            of a metadynamics run); see the module docstring. ``frame_log_weights`` (N,): the
            same as log-weights (one of the two; either overrides the frames' own). Bad
            weights raise :class:`~boltzgen.cg.frames.FrameWeightError`.
        reference: frames (same kinds as ``frames``) or (N, 2) CG dihedral values (radians)
            for the scores; default the (weighted) training frames. ``reference_weights``
            (N,) optional (default: a weighted reference's own weights).
        progress: ``progress(fraction, message)``.
    """
    cfg = config if isinstance(config, CGConfig) else CGConfig.from_dict(config)
    report = progress or (lambda _f, _m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    x_aa, f_aa, w_aa = training_frames(
        frames, forces, frame_weights, frame_log_weights, mapping, cfg.max_frames
    )
    cg = mapping.cg_system()
    x_cg = np.asarray(mapping.map_positions(x_aa), dtype=np.float32)
    shares_record = None
    if state_shares is not None:
        target = target_state_shares(state_shares, mapping, cg)
        w_aa, shares_record = state_share_weights(state_labels(cg.topology, x_cg), target, w_aa)
        keep = w_aa > 0
        x_aa, x_cg, w_aa = x_aa[keep], x_cg[keep], w_aa[keep]
        f_aa = None if f_aa is None else f_aa[keep]
    summary: dict[str, Any] = {
        "method": cfg.method,
        "config": asdict(cfg),
        "n_frames": int(len(x_cg)),
        "frame_ess": None if w_aa is None else float(w_aa.sum() ** 2 / (w_aa**2).sum()),
        "n_beads": cg.n_beads,
        "bead_atoms": mapping.atoms.tolist(),
        "temperature_K": cg.temperature,
        "state_shares": shares_record,
    }
    files: dict[str, str] = {}
    targets = None
    if cfg.method == "flow":
        f_cg = None
        if cfg.teacher_force_weight > 0:
            f_cg = _mapped_force_targets(mapping, x_aa, f_aa, x_cg)[1]
        targets = teacher_targets(cg, x_cg, w_aa, cfg, out, summary, files, report, f_cg)
        x_train, f_train, e_train = targets.positions, targets.forces, targets.energies
    else:
        x_train, f_train = _mapped_force_targets(mapping, x_aa, f_aa, x_cg)
        e_train = None
    summary["n_force_samples"] = int(len(x_train))
    # force matching of all-atom forces averages over the frames: weighted like them
    fm_w = w_aa if cfg.method == "forces" else None
    ff = _train_student(cg, x_cg, w_aa, x_train, f_train, fm_w, cfg, summary, report, e_train)
    if targets is not None and targets.probe is not None:
        summary["basins"].update(student_record(ff, cg, targets.probe) or {})
    files["forcefield"] = str(
        ff.save(out / "forcefield.pt", extra={"system": cg.to_spec(), "method": cfg.method})
    )
    ref_d, ref_w = _scoring_reference(reference, reference_weights, x_aa, w_aa, mapping, cg)
    scored = simulate_and_score(
        ff,
        cg,
        x_cg,
        cfg,
        out,
        ref_d,
        reference_weights=ref_w,
        start_weights=w_aa,
        state_shares=_equilibrium_shares(summary),
        progress=lambda f, m: report(0.75 + 0.25 * f, m),
    )
    summary["md"], summary["metrics"] = scored["md"], scored["metrics"]
    files.update(scored["files"])
    files["summary"] = str(out / "summary.json")
    summary["files"] = files
    summary["time_s"] = time.perf_counter() - t_start
    summary = json_clean(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report(1.0, "done")
    return summary


def _equilibrium_shares(summary: dict) -> dict[str, float] | None:
    """The student's state shares by importance sampling from the teacher, if trustworthy
    (ESS above 10 %); None otherwise (the walkers then start in proportion to the data)."""
    b = summary.get("basins") or {}
    if "student" in b and (b.get("student_ess") or 0.0) > 0.1:
        return b["student"]
    return None


def run_pipeline(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Deprecated name of :func:`train_and_simulate` (kept for one release)."""
    warnings.warn(
        "boltzgen.cg.run_pipeline is deprecated; use boltzgen.cg.train_and_simulate",
        DeprecationWarning,
        stacklevel=2,
    )
    return train_and_simulate(*args, **kwargs)


def _scoring_reference(
    reference: Any, reference_weights: Any, x_aa, w_aa, mapping: Mapping, cg
) -> tuple[np.ndarray, np.ndarray | None]:
    """The reference's CG dihedrals and weights; default the training frames with their
    weights (weighted data are scored as the distribution they stand for)."""
    if reference is None:
        return _reference_dihedrals(
            x_aa, w_aa if reference_weights is None else reference_weights, mapping, cg
        )
    return _reference_dihedrals(reference, reference_weights, mapping, cg)


def _mapped_force_targets(
    mapping: Mapping, x_aa: np.ndarray, f_aa: np.ndarray | None, x_cg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Classical force matching: the mapped all-atom forces of the frames."""
    if f_aa is None:
        raise InputError("method 'forces' needs all-atom forces (an MD file or forces=)")
    if f_aa.shape != x_aa.shape:
        raise ShapeError(f"forces must have the shape of the frames {x_aa.shape}")
    return x_cg, np.asarray(mapping.map_forces(f_aa), dtype=np.float32)


def _train_student(
    cg,
    x_cg: np.ndarray,
    w_cg: np.ndarray | None,
    x_train,
    f_train,
    f_weights: np.ndarray | None,
    cfg: CGConfig,
    summary: dict,
    report,
    e_train=None,
) -> CGForceField:
    """The CG force field (priors fitted to the mapped frames, resampled in proportion to
    their weights ``w_cg``) trained on the force targets (weighted by ``f_weights``)."""
    report(0.45, "training the CG force field")
    if w_cg is not None:  # priors from the equilibrium distribution, not the proposal's
        rng = np.random.default_rng(cfg.seed)
        x_cg = x_cg[rng.choice(len(x_cg), len(x_cg), p=w_cg / w_cg.sum())]
    ff = CGForceField.from_data(
        x_cg,
        cg.kT,
        bonds=cg.bonds,
        angles=cg.angles,
        dihedrals=cg.dihedral_quads,
        hidden=tuple(cfg.hidden),
        activation=cfg.activation,
        repulsion=cfg.repulsion,
    )
    sh = fit_forces(
        ff,
        x_train,
        f_train,
        epochs=epochs_for(cfg.epochs, cfg.steps, len(x_train), cfg.batch_size, cfg.val_fraction),
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_final=cfg.lr_final,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        progress=lambda f, m: report(0.45 + 0.3 * f, m),
        energies=e_train,
        energy_weight=cfg.energy_weight if e_train is not None else 0.0,
        weights=f_weights,
    )
    summary["student"] = {
        "best_val_mse": sh["best_val_mse"],
        "val_energy_mse": sh["val_energy_mse"][-1] if sh["val_energy_mse"] else None,
        "epochs_run": sh["epochs_run"],
        "time_s": sh["time"],
        "n_parameters": int(sum(p.numel() for p in ff.parameters())),
    }
    return ff
