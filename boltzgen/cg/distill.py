r"""Flow matching's teacher stage: from mapped frames to the student's training targets.

:func:`teacher_targets` fits the teacher flow q to the mapped frames (weighted likelihood if
the frames carry weights), then makes the force-matching set, keeping the balance between
the backbone basins (the states of :func:`boltzgen.cg.basins.state_labels`) at every step:

1. **calibration** (``calibrate_states``): a flow fitted to a basin holding 2 % of the frames
   gets that basin's mass wrong by tenths of a kT. The data's (weighted) state shares are the
   direct estimate, so the teacher's log-density is moved by one constant per state,
   ln(data share / teacher share), measured on ``n_probe`` fresh teacher samples. Forces
   inside a state are unchanged (the gradient of a constant is zero).
2. **balanced samples** (``balance_min_share``): the force-matching samples are picked from
   ``balance_oversample`` x ``n_teacher_samples`` teacher samples so that every state holds at
   least that share of them (uniform within a state). The targets kT grad log q do not depend
   on where they are evaluated, so for an exact student the minimiser is the same; a finite
   one spends its capacity on the minor basin too, instead of on 98 % of one basin.
3. **energy matching** (``energy_weight``): the teacher's calibrated log-density is a target
   as well: -kT (log q + calibration), matched up to one constant per minibatch
   (:func:`boltzgen.cg.forcefield.fit_forces`). Forces alone fix the free-energy offset of a
   minor basin only through the few samples on the barrier between; energies fix it in every
   pair of samples.

The record (``summary["basins"]``) holds the share of the minor states at each stage: data,
teacher samples, calibrated teacher, force samples, and after training the student's (by
importance sampling from the probe samples, :func:`student_record`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.cg import basins
from boltzgen.cg.schedule import teacher_schedule
from boltzgen.cg.teacher import CGFlow, teacher_forces
from boltzgen.generator.training import finish_record, held_out_val_nll

__all__ = ["Probe", "Targets", "student_record", "teacher_targets"]


@dataclass
class Probe:
    """Fresh teacher samples kept for the student's basin check: positions (n, beads, 3) nm,
    log q (n,), state labels (n,), the calibration ln(data share / teacher share) per state."""

    positions: np.ndarray
    log_q: np.ndarray
    labels: np.ndarray
    calibration: dict[str, float]

    def log_target(self) -> np.ndarray:
        """The calibrated teacher's log-density at the probe samples."""
        return self.log_q + np.array([self.calibration.get(s, 0.0) for s in self.labels])


@dataclass
class Targets:
    """Force-matching set: positions, forces, energies (kJ/mol up to a constant, or None)."""

    positions: np.ndarray
    forces: np.ndarray
    energies: np.ndarray | None
    probe: Probe | None


def _shares(labels: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, np.float64)
    return {str(s): float(w[labels == s].sum() / w.sum()) for s in np.unique(labels)}


def _fit_teacher(cg, x_cg, w_aa, f_cg, cfg, out: Path, files: dict, report) -> tuple:
    teacher = CGFlow.build(
        cg,
        x_cg,
        n_layers=cfg.teacher_layers,
        hidden=tuple(cfg.teacher_hidden),
        n_components=cfg.teacher_components,
        tails=cfg.teacher_tails,
        seed=cfg.seed,
    )

    def on_epoch(ev: dict) -> None:
        if ev.get("event") == "epoch":
            report(0.35 * ev["progress"], f"teacher epoch {ev['epoch']}/{ev['epochs']}")

    schedule = teacher_schedule(cfg, len(x_cg))
    hist = teacher.fit(
        x_cg,
        weights=w_aa,
        forces=f_cg,
        force_weight=cfg.teacher_force_weight,
        force_components=cfg.teacher_force_components,
        epochs=schedule["epochs"],
        patience=schedule["patience"],
        batch_size=cfg.teacher_batch_size,
        lr=cfg.teacher_lr,
        finish_fraction=cfg.teacher_finish,
        seed=cfg.seed,
        callbacks=[on_epoch],
    )
    files["teacher"] = str(teacher.save(out / "teacher.pt"))
    return teacher, hist, schedule


def _probe(teacher: CGFlow, cg, n: int, data_labels, w_aa, calibrate: bool) -> Probe:
    xs, lqs = [], []
    for start in range(0, n, 4096):
        x, lq = teacher.sample_positions(min(4096, n - start))
        xs.append(x.double())
        lqs.append(lq.double())
    x = torch.cat(xs).numpy()
    labels = basins.state_labels(cg.topology, x)
    cal = basins.state_log_calibration(data_labels, labels, w_aa) if calibrate else {}
    return Probe(x, torch.cat(lqs).numpy(), labels, cal)


def teacher_targets(
    cg,
    x_cg: np.ndarray,
    w_aa: np.ndarray | None,
    cfg,
    out: Path,
    summary: dict,
    files: dict,
    report: Callable[[float, str], None],
    f_cg: np.ndarray | None = None,
) -> Targets:
    """Fit the teacher and return the student's targets (see the module docstring); writes
    ``summary["teacher"]`` and ``summary["basins"]``. ``f_cg`` (N, beads, 3) kJ/mol/nm: the
    frames' mapped forces, matched by the teacher when ``cfg.teacher_force_weight`` > 0."""
    report(0.0, "training the teacher flow")
    t0 = time.perf_counter()
    teacher, hist, schedule = _fit_teacher(cg, x_cg, w_aa, f_cg, cfg, out, files, report)
    report(0.35, "teacher forces on flow samples")
    data_labels = basins.state_labels(cg.topology, x_cg)
    n_states = len(np.unique(data_labels))
    teacher.eval()
    torch.manual_seed(cfg.seed + 1)
    probe = _probe(
        teacher,
        cg,
        min(int(cfg.n_teacher_samples), 50_000),
        data_labels,
        w_aa,
        bool(cfg.calibrate_states) and n_states > 1,
    )
    select = None
    share = cfg.balance_min_share
    if share is not None and share > 0 and n_states > 1:
        rng = np.random.default_rng(cfg.seed)
        n = int(cfg.n_teacher_samples)

        def select(x: np.ndarray) -> np.ndarray:
            return basins.balanced_indices(basins.state_labels(cg.topology, x), n, share, rng)

    tf = teacher_forces(
        teacher,
        cfg.n_teacher_samples,
        filter_factor=cfg.force_filter_factor,
        max_msf=cfg.max_msf,
        seed=cfg.seed,
        n_proposed=int(cfg.n_teacher_samples) * max(1, int(cfg.balance_oversample)),
        select=select,
    )
    labels = basins.state_labels(cg.topology, tf.positions)
    energies = None
    if cfg.energy_weight and tf.log_q is not None:
        shift = np.array([probe.calibration.get(s, 0.0) for s in labels])
        energies = -cg.kT * (tf.log_q + shift)
    finite_val = held_out_val_nll(hist)
    summary["teacher"] = {
        "best_val_nll": min(finite_val) if finite_val else math.nan,
        "epochs_run": len(hist["train_loss"]),
        "schedule": schedule,
        "finish": finish_record(hist),
        "time_s": time.perf_counter() - t0,
        "forces": tf.summary(),
    }
    summary["basins"] = {
        "data": _shares(data_labels, w_aa),
        "teacher": _shares(probe.labels),
        "calibration": probe.calibration,
        "force_samples": _shares(labels),
    }
    return Targets(tf.positions, tf.forces, energies, probe if n_states > 1 else None)


def student_record(ff, cg, probe: Probe | None) -> dict[str, Any] | None:
    """The student's state shares under exp(-E/kT), by importance sampling from the probe
    (teacher) samples, and the calibrated teacher's for comparison; ``ess`` is the fraction of
    effective samples (near 1: the estimate is as good as the probe's size)."""
    if probe is None:
        return None
    with torch.no_grad():
        e = torch.cat(
            [
                ff.energy(torch.as_tensor(probe.positions[i : i + 4096]))
                for i in range(0, len(probe.positions), 4096)
            ]
        ).numpy()
    lw_student = -e / cg.kT - probe.log_q
    lw_teacher = probe.log_target() - probe.log_q
    out: dict[str, Any] = {}
    for name, lw in (("student", lw_student), ("teacher_calibrated", lw_teacher)):
        w = np.exp(lw - lw.max())
        out[name] = _shares(probe.labels, w)
        if name == "student":
            out["student_ess"] = float(w.sum() ** 2 / (w**2).sum() / len(w))
    return out
