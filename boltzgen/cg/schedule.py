"""Training lengths of the CG stages in minibatch steps: an epoch shrinks with the data set, a
step does not, so a fixed number of epochs (or an early-stopping patience in epochs) trains a
small data set for too few steps."""

from __future__ import annotations

import math
from typing import Any

from boltzgen.generator.config import TrainConfig

__all__ = ["batches_per_epoch", "epochs_for", "teacher_schedule"]

_TRAIN = TrainConfig.model_fields


def batches_per_epoch(n: int, batch: int, val_fraction: float) -> int:
    """Minibatches in one epoch over the ``n`` frames less the held-out share."""
    return max(1, math.ceil((n - round(val_fraction * n)) / batch))


def epochs_for(epochs: int, steps: int | None, n: int, batch: int, val_fraction: float) -> int:
    """``epochs``, or when ``steps`` is set the epochs that make that many steps."""
    if steps is None:
        return int(epochs)
    return max(1, math.ceil(int(steps) / batches_per_epoch(n, batch, val_fraction)))


def teacher_schedule(cfg: Any, n: int) -> dict[str, int]:
    """The teacher's ``epochs`` and early-stopping ``patience`` (epochs) for ``n`` frames under
    a :class:`~boltzgen.cg.pipeline.CGConfig`: at least ``teacher_min_steps`` minibatch steps
    and at least ``teacher_patience_steps`` steps of patience (never below the library's
    default patience in epochs)."""
    val = _TRAIN["val_fraction"].default
    per = batches_per_epoch(n, cfg.teacher_batch_size, val)
    epochs = epochs_for(cfg.teacher_epochs, cfg.teacher_steps, n, cfg.teacher_batch_size, val)
    return {
        "epochs": max(epochs, math.ceil(cfg.teacher_min_steps / per)),
        "patience": max(_TRAIN["patience"].default, math.ceil(cfg.teacher_patience_steps / per)),
    }
