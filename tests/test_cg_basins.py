"""Basin balance through the CG pipeline on a toy whose basin free energy is known exactly.

Five beads named like alanine dipeptide's backbone beads (C, N, CA, C, N), so phi and psi
are the CG dihedrals. Frames are drawn exactly from independent internal coordinates: bonds
and angles Gaussian, psi von Mises, phi from p(phi) ~ exp(-u(phi)) with
u = KAPPA cos 2 phi + H sin phi (kT): basins at phi = -pi/2 (major) and +pi/2 (minor, about
5 %), barriers at 0 and pi. The internal coordinates are independent and the Jacobian of the
dihedral is 1, so the Cartesian density's phi marginal is p(phi) itself and
dF = F(phi > 0) - F(phi < 0) = -ln(int_0^pi e^-u / int_-pi^0 e^-u), a 1-D integral.
"""

from __future__ import annotations

import math

import mdtraj
import numpy as np
import pytest
import torch

from boltzgen import cg
from boltzgen.cg import basins
from boltzgen.errors import InputError

torch.set_num_threads(1)

KAPPA, H = 1.5, 1.7


def _u(phi: np.ndarray, h: float = H) -> np.ndarray:
    return KAPPA * np.cos(2 * phi) + h * np.sin(phi)


def exact_df(h: float = H) -> float:
    g = np.linspace(-np.pi, np.pi, 400_001)
    p = np.exp(-_u(g, h))
    plus = np.trapezoid(np.where(g >= 0, p, 0.0), g)
    return -math.log(plus / (np.trapezoid(p, g) - plus))


def _place(a, b, c, r, theta, phi):
    """Atom d with |cd| = r, angle bcd = theta, dihedral abcd = phi (IUPAC sign)."""
    bc = c - b
    bc /= np.linalg.norm(bc, axis=-1, keepdims=True)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    m = np.cross(n, bc)
    return (
        c
        - (r * np.cos(theta))[:, None] * bc
        + (r * np.sin(theta) * np.cos(phi))[:, None] * m
        + (r * np.sin(theta) * np.sin(phi))[:, None] * n
    )


def toy_frames(n: int, seed: int, h: float = H) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 5, 3) nm, phi (n,)) drawn exactly (from the toy with tilt ``h``)."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-np.pi, np.pi, 20_001)
    cdf = np.cumsum(np.exp(-_u(grid, h)))
    phi = np.interp(rng.uniform(size=n) * cdf[-1], cdf, grid)
    psi = rng.vonmises(2.5, 2.0, size=n)
    r = 0.15 + 0.005 * rng.normal(size=(n, 4))
    th = 1.9 + 0.06 * rng.normal(size=(n, 3))
    x = np.zeros((n, 5, 3))
    x[:, 1, 0] = r[:, 0]
    x[:, 2] = x[:, 1] + r[:, 1:2] * np.stack([-np.cos(th[:, 0]), np.sin(th[:, 0]), np.zeros(n)], -1)
    x[:, 3] = _place(x[:, 0], x[:, 1], x[:, 2], r[:, 2], th[:, 1], phi)
    x[:, 4] = _place(x[:, 1], x[:, 2], x[:, 3], r[:, 3], th[:, 2], psi)
    return x.astype(np.float32), phi


def toy_mapping() -> cg.Mapping:
    top = mdtraj.Topology()
    chain = top.add_chain()
    names = [("ACE", ["C"]), ("ALA", ["N", "CA", "C"]), ("NME", ["N"])]
    for resname, atoms in names:
        res = top.add_residue(resname, chain)
        for a in atoms:
            top.add_atom(a, mdtraj.element.get_by_symbol(a[0]), res)
    return cg.Mapping(top, atoms=[0, 1, 2, 3, 4], temperature=300.0)


def test_toy_frames_have_the_stated_phi_and_the_exact_df():
    x, phi = toy_frames(4000, 0)
    m = toy_mapping()
    d = m.cg_system().dihedrals(x)
    np.testing.assert_allclose(np.angle(np.exp(1j * (d[:, 0] - phi))), 0.0, atol=1e-5)
    assert basins.state_labels(m.cg_system().topology, x).tolist() == [
        "+" if p >= 0 else "-" for p in d[:, 0]
    ]
    big = toy_frames(400_000, 1)[1]
    assert cg.delta_f(big) == pytest.approx(exact_df(), abs=0.03)
    assert 2.8 < exact_df() < 3.1


def test_basin_helpers():
    assert basins.df_of_share(0.5) == 0.0
    assert basins.df_of_share(0.0) == math.inf
    assert basins.basin_share([-1.0, 1.0, 2.0, -3.0]) == 0.5
    # a walker that flips from core to core twice, with an excursion that returns
    walk = np.array([[-1.5, -0.2, -1.5, 1.0, 1.2, 0.2, 1.0, -1.0, -2.0]])
    assert basins.count_transitions(walk).tolist() == [2]
    # importance sampling: proposal uniform, target twice as likely at angle >= 0
    a = np.linspace(-3, 3, 1000)
    r = basins.reweighted_share(np.where(a >= 0, math.log(2), 0.0), np.zeros(1000), a)
    assert r["share"] == pytest.approx(2 / 3, abs=0.01)
    labels = np.array(["-"] * 980 + ["+"] * 20)
    idx = basins.balanced_indices(labels, 100, 0.25, np.random.default_rng(0))
    assert len(set(idx.tolist())) == 100 and (labels[idx] == "+").sum() == 20  # pool-limited
    idx = basins.balanced_indices(labels, 40, 0.25, np.random.default_rng(0))
    assert (labels[idx] == "+").sum() == 10
    idx, w = basins.balanced_starts(labels, 10, {"+": 0.02, "-": 0.98}, np.random.default_rng(0))
    assert (labels[idx] == "+").sum() == 5 and w.sum() == pytest.approx(1.0)
    assert w[labels[idx] == "+"].sum() == pytest.approx(0.02)
    cal = basins.state_log_calibration(["+"] * 10 + ["-"] * 90, ["+"] * 5 + ["-"] * 95)
    assert cal["+"] == pytest.approx(math.log(2)) and cal["-"] == pytest.approx(math.log(90 / 95))


FAST = {
    "teacher_steps": 600,
    "teacher_min_steps": 0,
    "teacher_hidden": [32, 32],
    "n_teacher_samples": 10_000,
    "hidden": [64, 64],
    "steps": 1000,
    "n_walkers": 64,
    "n_steps": 3000,
    "report_interval": 20,
    "discard_frames": 25,
    # 64 walkers x 6 ps do not equilibrate the basins from data starts; spread and weighted
    # starts (the option for short runs) do
    "balanced_starts": True,
}


def _stage_dfs(summary: dict) -> dict[str, float]:
    b = summary["basins"]
    return {
        "data": basins.df_of_share(b["data"]["+"]),
        "teacher": basins.df_of_share(b["teacher"]["+"]),
        "student": basins.df_of_share(b["student"]["+"]),
        "md": summary["md"]["basin"]["df_kT"],
    }


def test_toy_basin_free_energy_survives_teacher_student_and_cg_md(tmp_path):
    """Each stage recovers the exact dF (2.95 kT): the data (sampling noise only), the
    teacher's samples, the student (importance sampling from the teacher, ESS checked) and the
    CG MD (walkers started half in each basin, weighted back to the student's shares).

    Measured without the fix (``calibrate_states=False, balance_min_share=None,
    energy_weight=0``): the student lands 0.4 kT high (force matching alone loses the minor
    basin's offset), which the student check here rejects."""
    x, _ = toy_frames(6000, 0)
    ref = np.stack(cg.dihedrals(toy_frames(100_000, 1)[0], [[0, 1, 2, 3], [1, 2, 3, 4]]).T, -1)
    s = cg.train_and_simulate(x, toy_mapping(), tmp_path, FAST, reference=ref)
    exact = exact_df()
    dfs = _stage_dfs(s)
    assert abs(dfs["data"] - exact) < 0.15, dfs
    assert abs(dfs["teacher"] - exact) < 0.5, dfs  # the flow alone: the calibration's job
    assert s["basins"]["student_ess"] > 0.5, s["basins"]
    assert abs(dfs["student"] - exact) < 0.25, dfs
    md = s["md"]["basin"]
    assert md["start_share"] == 0.5 and md["transitions"] > 0, md
    assert abs(dfs["md"] - exact) < 0.25, dfs
    assert abs(s["metrics"]["df_model_kT"] - dfs["md"]) < 1e-6
    assert s["metrics"]["kl"] < 0.4, s["metrics"]
    assert np.load(s["files"]["weights"]).shape == (s["metrics"]["n_model"],)


H_PROPOSAL = 0.6  # a wrong tilt: the minor basin holds 26 % of the frames instead of 5 %


def test_weighted_frames_recover_the_exact_df_and_ignoring_the_weights_does_not(tmp_path):
    """Frames drawn from the wrong toy (tilt 0.6 instead of 1.7: dF 1.05 instead of 2.95 kT) with
    importance weights exp(-(u - u_proposal)) = exp(-(H - 0.6) sin phi), handed over as a
    Boltzmann generator's weighted samples: every stage lands on the exact dF, the scoring's
    default reference (the weighted data) as well. The same frames without their weights give
    the proposal's dF (checked: the student lands > 1 kT off)."""
    from boltzgen.samples import Samples

    x, phi = toy_frames(6000, 3, h=H_PROPOSAL)
    log_w = -(H - H_PROPOSAL) * np.sin(phi) + 7.0  # any constant: weights are relative
    samples = Samples(
        x, log_q=np.full(len(x), np.nan), reduced_energy=np.zeros(len(x)), log_weights=log_w
    )
    exact, wrong = exact_df(), exact_df(H_PROPOSAL)
    assert exact - wrong > 1.3
    s = cg.train_and_simulate(samples, toy_mapping(), tmp_path / "weighted", FAST)
    dfs = _stage_dfs(s)
    assert 0.5 < s["frame_ess"] / s["n_frames"] < 0.95, s["frame_ess"]
    assert abs(dfs["data"] - exact) < 0.2, dfs
    assert abs(s["metrics"]["df_reference_kT"] - exact) < 0.2, s["metrics"]  # weighted "data"
    assert abs(dfs["teacher"] - exact) < 0.6, dfs
    assert abs(dfs["student"] - exact) < 0.3, dfs
    # 64 walkers x 6 ps crossing between weighted starts: quarter shares 1.7-5.1 % (measured),
    # about +-0.4 kT of MD noise around the student's exact balance
    assert abs(dfs["md"] - exact) < 0.5, dfs
    # the weights ignored: the same frames as plain positions (short MD: the student decides)
    quick = {**FAST, "n_walkers": 8, "n_steps": 600, "discard_frames": 5}
    u = cg.train_and_simulate(x, toy_mapping(), tmp_path / "ignored", quick)
    dfs_u = _stage_dfs(u)
    assert abs(dfs_u["data"] - wrong) < 0.2, dfs_u
    assert abs(dfs_u["student"] - exact) > 1.0, dfs_u


def test_state_share_weights_set_the_shares_and_keep_each_state_inside():
    labels = np.array(["-"] * 90 + ["+"] * 10 + ["x"] * 5)
    inner = np.linspace(1.0, 2.0, len(labels))  # a distribution inside each state
    w, rec = basins.state_share_weights(labels, {"+": 0.3, "-": 0.7}, inner)
    got = basins.state_shares(labels, w)
    assert got["+"] == pytest.approx(0.3) and got["-"] == pytest.approx(0.7)
    assert got["x"] == 0.0 and (w[labels == "x"] == 0).all()  # no target share: dropped
    for s in "+-":  # proportional to the given weights inside a state
        ratio = w[labels == s] / inner[labels == s]
        np.testing.assert_allclose(ratio, ratio[0])
    assert rec["data"]["+"] == pytest.approx(inner[90:100].sum() / inner.sum())
    with pytest.raises(InputError, match="no state"):  # 20 % of the mass has no frames
        basins.state_share_weights(labels, {"+": 0.3, "-": 0.5, "y": 0.2})
    with pytest.raises(InputError, match="finite"):
        basins.state_share_weights(labels, {"+": float("nan"), "-": 1.0})


def test_state_column_is_psi_for_proline_and_phi_otherwise():
    import boltzgen as bg
    from tests.conftest import DATA

    assert basins.state_column(toy_mapping().cg_system()) == 0
    pro = bg.System.from_pdb(DATA / "peptides" / "ace-pro-nme.pdb")
    assert basins.state_column(cg.Mapping.backbone(pro).cg_system()) == 1


def test_state_shares_set_the_basin_balance_of_frames_with_the_wrong_one(tmp_path):
    """Unweighted frames of the wrong toy (26 % instead of 5 % in the minor basin) with the
    right state shares given (as a refined Boltzmann generator's estimate would give them):
    the data, teacher and student stages land on the exact dF, as do the scores' default
    reference (the reweighted frames). Without the shares the same frames give the wrong dF
    (the test above)."""
    x, _ = toy_frames(6000, 3, h=H_PROPOSAL)
    exact = exact_df()
    p = 1.0 / (1.0 + math.exp(exact))
    s = cg.train_and_simulate(x, toy_mapping(), tmp_path, FAST, state_shares={"+": p, "-": 1.0 - p})
    dfs = _stage_dfs(s)
    assert s["state_shares"]["data"]["+"] > 0.2, s["state_shares"]
    assert abs(dfs["data"] - exact) < 1e-6, dfs  # set exactly, by construction
    assert abs(s["metrics"]["df_reference_kT"] - exact) < 1e-6, s["metrics"]
    assert abs(dfs["teacher"] - exact) < 0.6, dfs
    assert abs(dfs["student"] - exact) < 0.3, dfs
    assert abs(dfs["md"] - exact) < 0.5, dfs
