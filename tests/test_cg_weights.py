"""Weighted all-atom frames for the CG pipeline: loading, bad weights, weighted force matching."""

from __future__ import annotations

import re

import mdtraj
import numpy as np
import pytest
import torch
from test_cg_basins import toy_frames, toy_mapping  # the toy two-basin system

from boltzgen import cg
from boltzgen.cg.frames import FrameWeightError, weights_from_log
from boltzgen.errors import InputError
from boltzgen.samples import Samples

torch.set_num_threads(1)


def _toy() -> tuple[np.ndarray, cg.Mapping, mdtraj.Topology]:
    m = toy_mapping()
    return toy_frames(200, 0)[0], m, m.topology


def test_weights_from_log_is_relative_and_rejects_bad_log_weights():
    w = weights_from_log([0.0, np.log(2.0), -np.inf, 1000.0 + 0.0], 4)
    assert w[2] == 0.0 and w.max() == 1.0  # shifted by the max: no overflow at 1000
    np.testing.assert_allclose(weights_from_log([1.0, 1.0 + np.log(3.0)], 2), [1 / 3, 1.0])
    for bad, what in (
        ([0.0, np.nan, 1.0], "NaN"),
        ([-np.inf, -np.inf, -np.inf], "all -inf"),
        ([0.0, np.inf, 1.0], "+inf"),
        ([0.0, 1.0], "(3,)"),  # FrameWeightLengthError, a ShapeError too
    ):
        with pytest.raises(FrameWeightError, match=re.escape(what)):
            weights_from_log(bad, 3)
    assert issubclass(FrameWeightError, InputError)


def test_samples_files_are_read_with_their_log_weights(tmp_path):
    x, _, top = _toy()
    lw = np.linspace(-2.0, 0.0, len(x))
    path = Samples(x, np.zeros(len(x)), np.zeros(len(x)), lw, topology=top).save(tmp_path / "s.h5")
    xs, f, lws = cg.load_weighted_frames(path)
    np.testing.assert_allclose(xs, x, atol=1e-6)
    np.testing.assert_allclose(lws, lw)
    assert f is None
    # an mdtraj file without weights: unweighted frames
    mdtraj.Trajectory(x, top).save_hdf5(str(tmp_path / "plain.h5"))
    with pytest.raises(InputError):  # not an MD file (no forces) and not a samples file
        cg.load_weighted_frames(tmp_path / "plain.h5")
    assert cg.load_weighted_frames(mdtraj.Trajectory(x, top))[2] is None


def test_bad_frame_weights_raise_before_any_training(tmp_path):
    x, m, top = _toy()
    n = len(x)
    nan_lw = np.zeros(n)
    nan_lw[3] = np.nan
    cases = [
        {"frame_log_weights": nan_lw},
        {"frame_log_weights": np.full(n, -np.inf)},
        {"frame_log_weights": np.zeros(n - 1)},
        {"frame_weights": -np.ones(n)},
    ]
    for kw in cases:
        with pytest.raises(FrameWeightError):
            cg.train_and_simulate(x, m, tmp_path, {}, **kw)
    s = Samples(x, np.zeros(n), np.zeros(n), nan_lw, topology=top)
    with pytest.raises(FrameWeightError, match="NaN"):
        cg.train_and_simulate(s, m, tmp_path, {})
    with pytest.raises(InputError, match="not both"):
        cg.train_and_simulate(
            x, m, tmp_path, {}, frame_weights=np.ones(n), frame_log_weights=np.zeros(n)
        )
    assert not (tmp_path / "teacher.pt").exists()


def test_weighted_force_matching_ignores_frames_of_weight_zero():
    """Half the frames carry sign-flipped forces and weight zero: the weighted fit learns the clean
    target as well as a fit on the clean half does; the unweighted fit does not."""
    x, m, _ = _toy()
    x = np.asarray(m.map_positions(toy_frames(1200, 1)[0]))
    clean = cg.CGForceField.from_data(x, 2.494, hidden=(16,))
    target = cg.CGForceField.from_data(x, 2.494, hidden=(16,))
    with torch.no_grad():
        for p in target.net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    _, f = target.forces(torch.as_tensor(x, dtype=torch.float64))
    f = f.numpy()
    garbage = f.copy()
    garbage[1::2] *= -1.0  # the wrong sign: an unweighted fit averages towards zero force
    w = np.tile([1.0, 0.0], len(x) // 2)

    def err(model):
        _, pred = model.forces(torch.as_tensor(x[::2], dtype=torch.float64))
        return float(((pred.numpy() - f[::2]) ** 2).mean())

    kw = {"epochs": 20, "batch_size": 100, "lr": 3e-3, "val_fraction": 0.0}
    weighted = cg.CGForceField.from_data(x, 2.494, hidden=(16,))
    cg.fit_forces(weighted, x, garbage, weights=w, **kw)
    cg.fit_forces(clean, x[::2], f[::2], **kw)
    plain = cg.CGForceField.from_data(x, 2.494, hidden=(16,))
    cg.fit_forces(plain, x, garbage, **kw)
    assert err(weighted) < 1.5 * err(clean) + 1.0, (err(weighted), err(clean))
    assert err(plain) > 3 * err(weighted), (err(plain), err(weighted))
    with pytest.raises(InputError):
        cg.fit_forces(weighted, x, f, weights=np.zeros(len(x)), **kw)
