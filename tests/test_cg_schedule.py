"""The CG teacher's training length and patience in minibatch steps (boltzgen.cg.schedule)."""

import pytest

from boltzgen import cg
from boltzgen.cg.schedule import batches_per_epoch, epochs_for, teacher_schedule


def test_batches_per_epoch_leave_out_the_held_out_share():
    assert batches_per_epoch(2000, 256, 0.1) == 8  # 1,800 training frames
    assert batches_per_epoch(20_000, 256, 0.1) == 71
    assert batches_per_epoch(3, 256, 0.1) == 1


def test_epochs_for_steps():
    assert epochs_for(100, None, 2000, 256, 0.1) == 100
    assert epochs_for(100, 2000, 2000, 256, 0.1) == 250
    assert epochs_for(100, 1, 2000, 256, 0.1) == 1


@pytest.mark.parametrize(
    ("n", "epochs", "patience"),
    [
        (2000, 750, 70),  # 8 batches an epoch: the step floors decide
        (20_000, 100, 8),  # 71 batches an epoch: the epoch defaults decide
        (200_000, 100, 8),
    ],
)
def test_teacher_schedule_floors_in_steps(n, epochs, patience):
    assert teacher_schedule(cg.CGConfig(), n) == {"epochs": epochs, "patience": patience}


def test_teacher_schedule_keeps_explicit_epochs_without_the_floor():
    cfg = cg.CGConfig(teacher_epochs=3, teacher_min_steps=0, teacher_patience_steps=0)
    assert teacher_schedule(cfg, 2000) == {"epochs": 3, "patience": 8}
    cfg = cg.CGConfig(teacher_steps=600, teacher_min_steps=0)
    assert teacher_schedule(cfg, 2000)["epochs"] == 75
