"""Training a Boltzmann generator: maximum likelihood, reverse KL, their mixture, force matching.

Losses per batch (all in kT units, averaged over the batch):

* ``nll``   : -log q(x) on MD frames (maximum likelihood).
* ``kl``    : E_q[u_E(x) + log q(x)] on flow samples (reverse KL up to log Z); energies above
  ``energy_cutoff`` are softened as ``cut + log(1 + u - cut)`` and non-finite ones dropped
  (counted in the history), so one bad sample cannot blow up a step.
* ``force`` : mean squared error between the flow force grad_x log q(x) and the data force
  F(x)/kT (kT/nm), per Cartesian component.
* ``mixed`` : ``weights["nll"] * nll + weights["kl"] * kl + weights["force"] * force``.

Validation NLL on a held-out split drives early stopping and the plateau LR schedule; the
best-validation weights are restored at the end. Checkpoints hold model, optimizer, scheduler,
RNG states and history, so a resumed run continues where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzgen.errors import InputError, TrainingError
from boltzgen.generator.config import LOSSES, TrainConfig, make_config
from boltzgen.generator.data import as_training_data

__all__ = ["LOSSES", "TrainConfig", "fit", "validation_nll", "epoch_order"]

Callback = Callable[[dict[str, Any]], None]


def _soft_cap(u: torch.Tensor, cut: float) -> torch.Tensor:
    """Identity below ``cut``, logarithmic above: keeps gradients of huge energies bounded."""
    return torch.where(u < cut, u, cut + torch.log1p((u - cut).clamp_min(0.0)))


def kl_loss(gen, n: int, cut: float) -> tuple[torch.Tensor, int]:
    """Reverse-KL estimate on ``n`` flow samples; returns (loss, number of dropped samples)."""
    x, log_q = gen.sample_positions(n)
    u = gen.energy(x.double()).to(x.dtype)
    ok = torch.isfinite(u) & torch.isfinite(log_q)
    if not bool(ok.any()):
        raise TrainingError("every reverse-KL sample had a non-finite energy or density")
    return (_soft_cap(u[ok], cut) + log_q[ok]).mean(), int((~ok).sum())


def nll_loss(gen, x: torch.Tensor) -> torch.Tensor:
    lq = gen.log_prob(x)
    ok = torch.isfinite(lq)
    if not bool(ok.any()):
        raise TrainingError("no training frame lies inside the model's support")
    return -lq[ok].mean()


def force_loss(gen, x: torch.Tensor, f: torch.Tensor, kT: float) -> torch.Tensor:
    _, g = gen.force(x, create_graph=True)
    return ((g - f / kT) ** 2).mean()


def _batch_loss(gen, cfg: TrainConfig, w: dict[str, float], x, f) -> tuple[torch.Tensor, dict]:
    parts: dict[str, float] = {}
    total = torch.zeros((), dtype=gen.dtype)
    if w.get("nll"):
        nll = nll_loss(gen, x)
        total = total + w["nll"] * nll
        parts["nll"] = float(nll.detach())
    if w.get("force"):
        if f is None:
            raise InputError("force matching needs training data with forces")
        fm = force_loss(gen, x, f, gen.system.kT)
        total = total + w["force"] * fm
        parts["force"] = float(fm.detach())
    if w.get("kl"):
        kl, dropped = kl_loss(gen, cfg.kl_batch_size, cfg.energy_cutoff)
        total = total + w["kl"] * kl
        parts["kl"] = float(kl.detach())
        parts["kl_dropped"] = dropped
    return total, parts


@torch.no_grad()
def validation_nll(
    gen, x: torch.Tensor, batch_size: int = 4096, weights: np.ndarray | None = None
) -> float:
    """Mean -log q over held-out frames (frames outside the support count as +inf); with
    ``weights`` (N,) the weighted mean, the estimate of what weighted training minimises."""
    nll = np.concatenate(
        [
            -gen.log_prob(x[s : s + batch_size]).double().numpy()
            for s in range(0, len(x), batch_size)
        ]
    )
    if weights is None:
        return float(nll.mean())
    keep = weights > 0  # a zero-weight frame outside the support must not make the mean nan
    return float(np.average(nll[keep], weights=weights[keep]))


def epoch_order(rng: np.random.Generator, n: int, p: np.ndarray | None = None) -> np.ndarray:
    """Frame indices for one epoch: a permutation of ``range(n)``, or with frame probabilities
    ``p`` (n,) n draws with replacement in proportion to them (zero-weight frames never)."""
    if p is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, p=p)


def _make_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.lr_factor, patience=max(1, cfg.patience // 3)
        )
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    return None


def fit(
    gen,
    data: Any = None,
    loss: str | None = None,
    *,
    config: TrainConfig | dict[str, Any] | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    checkpoint: str | Path | None = None,
    resume: bool = True,
    **options,
) -> dict[str, list[float]]:
    """Train ``gen`` in place and return its history (per-epoch lists).

    Args:
        data: training frames (see :func:`~boltzgen.generator.data.as_training_data`); needed
            for "nll", "force" and "mixed" with a data term; "kl" may train from scratch.
        loss: "nll" | "kl" | "mixed" | "force" (default: ``config``'s, else "nll").
        config: a :class:`~boltzgen.generator.config.TrainConfig` (or dict of its fields);
            ``loss`` and ``**options`` override its fields.
        callbacks: called with a dict per epoch (``epoch``, ``progress`` in [0, 1], losses,
            ``val_nll``, ``lr``) and once with ``event="done"``.
        checkpoint: file written after every epoch (atomically); with ``resume`` an existing
            file is loaded first and training continues from its epoch.
        **options: fields of :class:`TrainConfig`.
    """
    if loss is not None:
        options["loss"] = loss
    cfg = make_config(TrainConfig, config, **options)
    loss = cfg.loss
    weights = cfg.loss_weights()
    needs_data = bool(weights.get("nll") or weights.get("force"))
    torch.manual_seed(cfg.seed)
    if data is None:
        if needs_data:
            raise InputError(f"loss {loss!r} needs training data")
        train, val = None, None
    else:
        td = as_training_data(data, gen.system.n_atoms)
        if weights.get("force") and td.forces is None:
            raise InputError("force matching needs training data with forces")
        train, val = td.split(cfg.val_fraction, cfg.seed)
    x_train, f_train = train.tensors(gen.dtype) if train is not None else (None, None)
    x_val = val.tensors(gen.dtype)[0] if val is not None else None
    p_train = train.probabilities() if train is not None else None
    w_val = val.weights if val is not None else None

    steps_per_epoch = (
        max(1, math.ceil(len(train) / cfg.batch_size))
        if train is not None
        else cfg.kl_steps_per_epoch
    )
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _make_scheduler(opt, cfg, steps_per_epoch)
    history: dict[str, list[float]] = {"train_loss": [], "val_nll": [], "lr": [], "time": []}
    start_epoch, best, best_state, bad_epochs, step = 0, math.inf, None, 0, 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        gen.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        history = state["history"]
        start_epoch, best, bad_epochs, step = (
            state["epoch"],
            state["best"],
            state["bad_epochs"],
            state["step"],
        )
        best_state = state.get("best_state")

    rng = np.random.default_rng(cfg.seed + start_epoch)
    t0 = time.perf_counter() - (history["time"][-1] if history["time"] else 0.0)
    stop_reason = "epochs"
    for epoch in range(start_epoch, cfg.epochs):
        gen.train()
        sums: dict[str, float] = {}
        n_batches = 0
        order = epoch_order(rng, len(x_train), p_train) if x_train is not None else None
        for b in range(steps_per_epoch):
            if order is not None:
                idx = torch.as_tensor(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
                xb, fb = x_train[idx], (f_train[idx] if f_train is not None else None)
            else:
                xb, fb = None, None
            total, parts = _batch_loss(gen, cfg, weights, xb, fb)
            if not torch.isfinite(total):
                raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}")
            opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(gen.parameters(), cfg.clip_grad)
            opt.step()
            if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
                sched.step()
            step += 1
            n_batches += 1
            sums["loss"] = sums.get("loss", 0.0) + float(total.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stop_reason = "max_steps"
                break
            if cfg.time_limit is not None and time.perf_counter() - t0 > cfg.time_limit:
                stop_reason = "time_limit"
                break
        gen.eval()
        means = {k: v / n_batches for k, v in sums.items()}
        history["train_loss"].append(means.pop("loss"))
        for k, v in means.items():
            history.setdefault(f"train_{k}", []).append(v)
        metric = (
            validation_nll(gen, x_val, weights=w_val)
            if x_val is not None
            else history["train_loss"][-1]
        )
        history["val_nll"].append(metric if x_val is not None else math.nan)
        history["lr"].append(opt.param_groups[0]["lr"])
        history["time"].append(time.perf_counter() - t0)
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(metric)
        if metric < best:
            best, bad_epochs = metric, 0
            best_state = {k: v.detach().clone() for k, v in gen.state_dict().items()}
        else:
            bad_epochs += 1
        event = {
            "event": "epoch",
            "epoch": epoch + 1,
            "epochs": cfg.epochs,
            "progress": (epoch + 1) / cfg.epochs,
            "step": step,
            "lr": history["lr"][-1],
            "train_loss": history["train_loss"][-1],
            "val_nll": history["val_nll"][-1],
            **{f"train_{k}": v for k, v in means.items()},
        }
        if ckpt is not None:
            tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
            torch.save(
                {
                    "model": gen.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "epoch": epoch + 1,
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "step": step,
                    "best_state": best_state,
                    "config": cfg.model_dump(mode="json"),
                },
                tmp,
            )
            tmp.replace(ckpt)
        for cb in callbacks:
            cb(event)
        if stop_reason != "epochs":
            break
        if bad_epochs >= cfg.patience:
            stop_reason = "early_stopping"
            break
    if best_state is not None:
        gen.load_state_dict(best_state)
    gen.history = history
    summary = {
        "event": "done",
        "stop_reason": stop_reason,
        "best_val_nll": best if x_val is not None else math.nan,
        "epochs_run": len(history["train_loss"]),
    }
    history["stop_reason"] = [stop_reason]  # type: ignore[list-item]
    for cb in callbacks:
        cb(summary)
    return history
