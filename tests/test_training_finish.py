"""The training's finish (``finish_fraction``): back to the best weights, every frame trains,
the rate anneals to zero; on the small analytic target of :mod:`_toy_target`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy_target import ToyGenerator, exact_samples, interrupted_and_resumed

from boltzgen.generator.config import TrainConfig
from boltzgen.generator.losses import make_objective
from boltzgen.generator.training import (
    _Data,
    _maybe_start_finish,
    _prepare_data,
    _Run,
    finish_lr,
    fit,
)

OPTS = dict(batch_size=32, lr=3e-3, val_fraction=0.1, patience=1000, guard_samples=0)


def _params(gen) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in gen.parameters()]).numpy().copy()


def test_finish_lr_anneals_from_its_start_value_to_zero():
    cfg = TrainConfig(lr=1e-3, finish_fraction=0.25)
    finish = {"start": 0.75, "end": 1.0}
    assert finish_lr(cfg, finish, 0.75) == pytest.approx(2e-4)  # lr / 5 by default
    assert finish_lr(cfg, finish, 0.875) == pytest.approx(1e-4)
    assert finish_lr(cfg, finish, 1.0) == pytest.approx(0.0, abs=1e-15)
    assert finish_lr(cfg.model_copy(update={"finish_lr": 5e-4}), finish, 0.75) == 5e-4


def _run_at(gen, data, cfg: TrainConfig, step: int) -> tuple[_Run, _Data]:
    d = _prepare_data(gen, data, cfg, make_objective(cfg), None)
    run = _Run(gen, cfg, d.epoch_steps(cfg))
    run.step = step
    return run, d


@pytest.mark.parametrize("trigger", ["schedule", "early_stopping"])
def test_finish_starts_from_the_best_weights_on_every_frame(trigger):
    data = exact_samples(300, seed=1)
    cfg = TrainConfig(epochs=10, finish_fraction=0.2, **OPTS)
    gen = ToyGenerator(seed=0)
    # not the current weights
    best = {k: v + 0.01 if v.is_floating_point() else v for k, v in gen.state_dict().items()}
    # 270 training frames: 9 steps an epoch, 90 in all; the finish is due from step 72
    run, d = _run_at(gen, data, cfg, step=72 if trigger == "schedule" else 30)
    run.best_state = best
    run.bad_epochs = 0 if trigger == "schedule" else cfg.patience
    assert len(d.x) == 270
    _maybe_start_finish(gen, run, d, cfg, elapsed=0.0)
    assert run.finish["trigger"] == trigger
    start = 0.8 if trigger == "schedule" else 30 / 90
    assert run.finish["start"] == pytest.approx(start)
    assert run.finish["end"] == pytest.approx(min(1.0, start + 0.2))
    for k, v in gen.state_dict().items():
        torch.testing.assert_close(v, best[k])
    assert len(d.x) == 300 and d.epoch_steps(cfg) == 10  # the validation frames train too
    assert run.sched is None  # the finish sets the rate itself


def test_finish_not_due_leaves_the_run_alone():
    data = exact_samples(300, seed=1)
    cfg = TrainConfig(epochs=10, finish_fraction=0.2, **OPTS)
    gen = ToyGenerator(seed=0)
    run, d = _run_at(gen, data, cfg, step=60)
    before = _params(gen)
    _maybe_start_finish(gen, run, d, cfg, elapsed=0.0)
    assert run.finish is None and len(d.x) == 270
    np.testing.assert_array_equal(_params(gen), before)


def test_run_with_a_finish_anneals_and_returns_its_last_weights(tmp_path):
    data = exact_samples(300, seed=1)
    events = []
    gen = ToyGenerator(seed=0)
    h = fit(
        gen, data, epochs=10, finish_fraction=0.2, checkpoint=tmp_path / "c.pt",
        callbacks=[events.append], **OPTS,
    )  # fmt: skip
    assert h["finish"] == [{"start": pytest.approx(0.8), "end": 1.0, "epoch": 8,
                            "trigger": "schedule"}]  # fmt: skip
    steps = [e["step"] for e in events if e["event"] == "epoch"]
    assert steps[:8] == [9 * (i + 1) for i in range(8)]
    assert steps[8] == 82  # ten steps an epoch: 300 frames of 32
    assert h["stop_reason"] == ["epochs"]
    lr = h["lr"]
    assert all(v == 3e-3 for v in lr[:8])  # the plateau phase (no plateau reached)
    assert 0 < lr[8] < 6e-4 and lr[-1] < 0.1 * 6e-4  # from lr / 5 towards zero
    # the run returns the finish's last weights, not the plateau phase's best
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    for k, v in gen.state_dict().items():
        torch.testing.assert_close(v, state["model"][k])


def test_finish_resumes_from_a_checkpoint_like_an_uninterrupted_run(tmp_path):
    data = exact_samples(300, seed=1)
    opts = dict(epochs=10, finish_fraction=0.3, **OPTS)
    full, full_gen, resumed, gen = interrupted_and_resumed(data, opts, 8, tmp_path)
    assert resumed["finish"][0]["epoch"] == 7
    for key in ("train_loss", "val_nll", "lr"):
        np.testing.assert_allclose(resumed[key], full[key], rtol=1e-9, err_msg=key)
    np.testing.assert_allclose(_params(gen), _params(full_gen), rtol=1e-9)
