"""Coarse-graining: mapping and force map, teacher, student, CG MD, metrics, pipeline."""

from __future__ import annotations

import json
import math

import mdtraj
import numpy as np
import pytest
import torch

import boltzgen as bg
from boltzgen import cg
from boltzgen.constants import GAS_CONSTANT
from boltzgen.errors import BoltzgenError, InputError, ShapeError
from boltzgen.paths import data_file

torch.set_num_threads(1)

KT = GAS_CONSTANT * 300.0


def _topology(n: int) -> mdtraj.Topology:
    top = mdtraj.Topology()
    res = top.add_residue("UNK", top.add_chain())
    for i in range(n):
        top.add_atom(f"C{i}", mdtraj.element.carbon, res)
    return top


@pytest.fixture(scope="module")
def adp_md():
    return bg.load_md(data_file("adp-vacuum-300K.h5"))


@pytest.fixture(scope="module")
def adp_mapping(adp_md):
    return cg.Mapping.backbone(adp_md.system())


@pytest.fixture(scope="module")
def adp_cg_frames(adp_md, adp_mapping):
    return np.asarray(adp_mapping.map_positions(adp_md.trajectory.xyz[::12]))


# ---------------------------------------------------------------------- mapping
def test_adp_backbone_mapping_and_dihedrals(adp_md, adp_mapping):
    system = adp_md.system()
    assert adp_mapping.atoms.tolist() == [4, 6, 8, 14, 16]
    assert cg.Mapping(system, atoms=[4, 6, 8, 14, 16]).atoms.tolist() == [4, 6, 8, 14, 16]
    sel = cg.Mapping(system, atoms="index 4 6 8 14 16")
    assert sel.atoms.tolist() == [4, 6, 8, 14, 16]
    cgs = adp_mapping.cg_system()
    assert cgs.n_beads == 5 and cgs.dihedral_quads.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert abs(cgs.kT - system.kT) < 1e-12
    xyz = adp_md.trajectory.xyz[:500]
    x_cg = adp_mapping.map_positions(xyz)
    assert x_cg.shape == (500, 5, 3)
    d = cgs.dihedrals(x_cg)
    phi, psi = bg.cv.dihedral(system, "phi"), bg.cv.dihedral(system, "psi")
    np.testing.assert_allclose(d[:, 0], phi(xyz), atol=1e-6)
    np.testing.assert_allclose(d[:, 1], psi(xyz), atol=1e-6)
    # the bead topology builds internal coordinates whose torsions are phi and psi
    ic = bg.InternalCoordinates.from_topology(cgs.topology)
    z, _ = ic.forward(torch.as_tensor(x_cg, dtype=torch.float64))
    tors = z[:, ic.torsion_columns].numpy()
    np.testing.assert_allclose(tors, d, atol=1e-6)
    # mdtraj finds phi/psi on the beads as well
    assert bg.cv.dihedral(cgs.topology, "phi").atoms == (0, 1, 2, 3)
    # torch in, torch out; forces: the slice without constraints
    f = torch.randn(3, 22, 3)
    np.testing.assert_allclose(adp_mapping.map_forces(f).numpy(), f[:, [4, 6, 8, 14, 16]].numpy())
    with pytest.raises(InputError):
        cg.Mapping(system, atoms="name XX")


def test_hbond_constraints_join_hydrogens_to_beads(adp_md):
    m = cg.Mapping.backbone(bg.System.alanine_dipeptide(constraints="hbonds"))
    assert [g.tolist() for g in m.groups] == [[4], [6, 7], [8, 9], [14], [16, 17]]
    f = np.random.default_rng(0).normal(size=(2, 22, 3))
    mapped = m.map_forces(f)
    np.testing.assert_allclose(mapped[:, 1], f[:, 6] + f[:, 7])
    with pytest.raises(InputError, match="constrained CG distance"):
        cg.Mapping(_topology(3), atoms=[0, 1], constraints=[(0, 2), (2, 1)])


def test_slice_force_map_gives_the_mean_force_of_a_gaussian_system():
    """Beads 0, 1 and a free particle y; U = a/2|x0-y|^2 + b/2|x1-y|^2 + c/2|x0-x1|^2
    + e/2(|x0|^2 + |x1|^2). Integrating y out gives the PMF with c_eff = c + ab/(a+b); the
    least-squares fit of the mapped (slice) forces on the bead positions must be -grad PMF."""
    a, b, c, e = 400.0, 200.0, 100.0, 50.0
    k = np.array([[a + c + e, -c, -a], [-c, b + c + e, -b], [-a, -b, a + b]])  # U = x.K.x/2
    rng = np.random.default_rng(1)
    n = 100_000
    chol = np.linalg.cholesky(KT * np.linalg.inv(k))
    x = np.einsum("ij,njc->nic", chol, rng.normal(size=(n, 3, 3)))  # (n, particle, xyz)
    f = -np.einsum("ij,njc->nic", k, x)
    m = cg.Mapping(_topology(3), atoms=[0, 1], temperature=300.0)
    r, fm = m.map_positions(x), m.map_forces(f)
    # least squares F_comp = R_comp @ W^T over all samples and components
    rr = r.transpose(0, 2, 1).reshape(-1, 2)
    ff = fm.transpose(0, 2, 1).reshape(-1, 2)
    w, *_ = np.linalg.lstsq(rr, ff, rcond=None)
    c_eff = c + a * b / (a + b)
    expected = -np.array([[c_eff + e, -c_eff], [-c_eff, c_eff + e]])
    np.testing.assert_allclose(w.T, expected, rtol=0.02, atol=1.5)


def test_constraint_aware_force_map_matches_the_pmf_and_the_plain_slice_does_not():
    """Particle y held at distance d from bead 0; U = k/2|x0-x1|^2 + a/2|y-x1|^2.
    PMF(r) = (k+a)/2 r^2 - kT log(sinh s / s), s = a d r / kT, so
    -dA/dr = -(k+a) r + a d L(s) with L(s) = coth s - 1/s. Exact joint samples: the direction
    n of y - x0 is uniform, r | n is Gaussian with mean -a d n / (k + a)."""
    k, a, d = 1000.0, 500.0, 0.1
    rng = np.random.default_rng(2)
    n = 200_000
    nvec = rng.normal(size=(n, 3))
    nvec /= np.linalg.norm(nvec, axis=1, keepdims=True)
    r = -a * d * nvec / (k + a) + math.sqrt(KT / (k + a)) * rng.normal(size=(n, 3))
    x1 = rng.normal(size=(n, 3))  # free translation
    x0 = x1 + r
    y = x0 + d * nvec
    x = np.stack([x0, x1, y], 1)
    f = np.stack([-k * r, k * r + a * (y - x1), -a * (y - x1)], 1)
    top = _topology(3)
    aware = cg.Mapping(top, atoms=[0, 1], constraints=[(0, 2)], temperature=300.0)
    plain = cg.Mapping(top, atoms=[0, 1], constraints=[], temperature=300.0)
    np.testing.assert_array_equal(aware.map_positions(x), x[:, :2])
    rlen = np.linalg.norm(r, axis=1)
    rhat = r / rlen[:, None]
    edges = np.quantile(rlen, np.linspace(0.05, 0.95, 10))
    centers, mean_aware, mean_plain, err = [], [], [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (rlen >= lo) & (rlen < hi)
        fa = (aware.map_forces(f[sel])[:, 0] * rhat[sel]).sum(-1)
        fp = (plain.map_forces(f[sel])[:, 0] * rhat[sel]).sum(-1)
        centers.append(rlen[sel])
        mean_aware.append(fa.mean())
        mean_plain.append(fp.mean())
        err.append(fa.std() / math.sqrt(sel.sum()))

    def mean_force(rv):
        s = a * d * rv / KT
        return -(k + a) * rv + a * d * (1.0 / np.tanh(s) - 1.0 / s)

    expected = np.array([mean_force(cv).mean() for cv in centers])
    dev = np.abs(np.array(mean_aware) - expected)
    assert (dev < 5 * np.array(err) + 0.5).all(), (mean_aware, expected)
    assert (np.abs(np.array(mean_plain) - expected) > 5.0).all()
    np.testing.assert_allclose(aware.masses, [2 * 12.0107, 12.0107], atol=1e-3)


# ---------------------------------------------------------------------- student / teacher
def _random_ff(x_cg, **kw):
    ff = cg.CGForceField.from_data(x_cg, KT, hidden=(32, 32), **kw)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ff.net[-1].parameters():
            p.normal_(0, 0.5)
    return ff


def _central_gradient(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central finite differences of a per-configuration scalar fn over (B, beads, 3)."""
    fd = torch.zeros_like(x)
    for i in range(x.shape[1]):
        for c in range(3):
            dx = torch.zeros_like(x)
            dx[:, i, c] = eps
            fd[:, i, c] = (fn(x + dx) - fn(x - dx)) / (2 * eps)
    return fd


def test_forcefield_forces_are_minus_the_energy_gradient(adp_cg_frames, tmp_path):
    ff = _random_ff(adp_cg_frames, repulsion=True)
    x = torch.as_tensor(adp_cg_frames[:4], dtype=torch.float64)
    e, f = ff.forces(x)
    torch.testing.assert_close(f, -_central_gradient(ff.energy, x), rtol=1e-5, atol=1e-4)
    # invariance: no net force, rotation does not change the energy
    torch.testing.assert_close(f.sum(1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-8, rtol=0)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    torch.testing.assert_close(ff.energy(x @ q.T + 1.0), e)
    # priors: k = kT / var of the bond lengths
    r = np.linalg.norm(adp_cg_frames[:, 1] - adp_cg_frames[:, 0], axis=-1)
    assert float(ff.bond_k[0]) == pytest.approx(KT / r.var(ddof=1), rel=1e-3)
    # save / load round trip with weights_only
    path = ff.save(tmp_path / "ff.pt")
    assert isinstance(torch.load(path, weights_only=True), dict)
    torch.testing.assert_close(cg.CGForceField.load(path).energy(x), e)
    with pytest.raises(InputError):
        cg.CGForceField.load(tmp_path / "missing.pt")


def test_fit_forces_learns_a_target_force_field_and_keeps_the_priors(adp_cg_frames):
    target = _random_ff(adp_cg_frames)
    x = adp_cg_frames[:1500]
    _, f = target.forces(torch.as_tensor(x, dtype=torch.float64))
    student = cg.CGForceField.from_data(x, KT, hidden=(32, 32))
    k_before = student.bond_k.clone()
    _, f0 = student.forces(torch.as_tensor(x, dtype=torch.float64))
    start = float(((f0 - f) ** 2).mean())
    hist = cg.fit_forces(student, x, f.numpy(), epochs=15, batch_size=128, lr=3e-3)
    assert hist["best_val_mse"] < 0.5 * start
    assert student.bond_k.dtype == torch.float64 and torch.equal(student.bond_k, k_before)


def test_teacher_forces_are_kT_grad_log_q(adp_mapping, adp_cg_frames, tmp_path):
    cgs = adp_mapping.cg_system()
    teacher = cg.CGFlow.build(cgs, adp_cg_frames, n_layers=2, hidden=(16,), dtype="float64")
    teacher.fit(adp_cg_frames[:512], epochs=1, batch_size=128)
    x, lq = teacher.sample_positions(6)
    assert torch.isfinite(lq).all()
    f = teacher.forces(x)
    fd = _central_gradient(teacher.log_prob, x)
    torch.testing.assert_close(f, cgs.kT * fd, rtol=1e-4, atol=1e-3)
    # log q from sampling equals log_prob at the sample
    torch.testing.assert_close(teacher.log_prob(x), lq, rtol=1e-6, atol=1e-6)
    tf = cg.teacher_forces(teacher, 300, filter_factor=2.0, seed=0)
    assert tf.n_drawn == 300 and 0 < tf.n_dropped < 300
    assert len(tf.positions) == 300 - tf.n_dropped
    assert (tf.forces**2).mean(axis=(1, 2)).max() <= tf.threshold * (1 + 1e-5)
    loaded = cg.CGFlow.load(teacher.save(tmp_path / "teacher.pt"))
    torch.testing.assert_close(loaded.log_prob(x), teacher.log_prob(x))


def test_weighted_teacher_learns_the_reweighted_density(adp_mapping, adp_cg_frames):
    # frames of a biased run come with weights; here the few frames with psi < 0 (alpha-R,
    # 3 % of this set) weigh 20x the others (about 38 % of the weight), so a teacher that
    # honours the weights puts several times the mass there of one trained unweighted
    cgs = adp_mapping.cg_system()
    psi = cgs.dihedrals(adp_cg_frames)[:, 1]
    w = np.where(psi < 0, 1.0, 0.05)
    fractions = []
    for weights in (None, w):
        torch.manual_seed(0)
        t = cg.CGFlow.build(cgs, adp_cg_frames, n_layers=4, hidden=(32,), dtype="float64")
        t.fit(adp_cg_frames, weights=weights, epochs=15, batch_size=128, seed=0)
        with torch.no_grad():
            x, _ = t.sample_positions(2000)
        fractions.append(float((cgs.dihedrals(x.numpy())[:, 1] < 0).mean()))
    assert fractions[0] < 0.2 and fractions[1] > 0.25 and fractions[1] > 3 * fractions[0], fractions


def test_teacher_force_term_pulls_its_forces_to_the_frames_forces(adp_mapping, adp_cg_frames):
    # the frames' forces are those of another flow A: a teacher trained on positions and
    # those forces reproduces A's forces much better than one trained on positions alone
    cgs = adp_mapping.cg_system()
    x = adp_cg_frames
    a = cg.CGFlow.build(cgs, x, n_layers=2, hidden=(16,), dtype="float64", seed=0)
    a.fit(x, epochs=10, batch_size=128, seed=0)
    f_a = a.forces(torch.as_tensor(x)).numpy()
    errors = []
    for weight in (0.0, 0.1):
        b = cg.CGFlow.build(cgs, x, n_layers=2, hidden=(16,), dtype="float64", seed=1)
        b.fit(x, forces=f_a, force_weight=weight, epochs=5, batch_size=128, seed=1)
        errors.append(float(np.sqrt(((b.forces(torch.as_tensor(x)).numpy() - f_a) ** 2).mean())))
    assert errors[1] < 0.8 * errors[0], errors
    with pytest.raises(InputError, match="forces"):
        b.fit(x, force_weight=0.1, epochs=1)
    with pytest.raises(ShapeError, match="forces must have the shape of positions"):
        b.fit(x, forces=f_a[:, :3], force_weight=0.1, epochs=1)


def test_teacher_torsion_forces_are_the_cartesian_ones_projected(adp_mapping, adp_cg_frames):
    # a teacher's own forces projected on its torsions give its torsion gradient, whatever
    # frame the frames and forces come in (rotated at random); a teacher trained on another
    # flow's forces along the torsions alone matches those torsion forces better
    cgs = adp_mapping.cg_system()
    x = adp_cg_frames
    a = cg.CGFlow.build(cgs, x, n_layers=2, hidden=(16,), dtype="float64", seed=0)
    a.fit(x, epochs=10, batch_size=128, seed=0)
    xt = torch.as_tensor(x[:64], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    rot = torch.linalg.qr(torch.randn(64, 3, 3, generator=g, dtype=torch.float64))[0]
    rot = rot * torch.sign(torch.linalg.det(rot))[:, None, None]  # proper rotations
    xr = xt @ rot.transpose(1, 2) + 0.3
    fr = a.forces(xr)
    own = a.torsion_log_prob_grad(xr)
    assert own.shape == (64, 2) and own.abs().max() > 0.1
    torch.testing.assert_close(a.torsion_force_targets(xr, fr), own, rtol=1e-6, atol=1e-6)
    # the forces to match: those of a flow unlike what the likelihood alone learns (two
    # epochs on half the frames)
    c = cg.CGFlow.build(cgs, x, n_layers=2, hidden=(16,), dtype="float64", seed=2)
    c.fit(x[::2], epochs=2, batch_size=128, seed=2)
    f_a = c.forces(torch.as_tensor(x)).numpy()
    t_a = c.torsion_force_targets(x, f_a)
    errors = []
    for weight in (0.0, 1.0):  # whitened residuals: weight 1 is a Gaussian likelihood
        b = cg.CGFlow.build(cgs, x, n_layers=2, hidden=(16,), dtype="float64", seed=1)
        b.fit(
            x, forces=f_a, force_weight=weight, force_components="torsions", epochs=5,
            batch_size=128, seed=1,
        )  # fmt: skip
        errors.append(float(((b.torsion_log_prob_grad(x) - t_a) ** 2).mean().sqrt()))
    assert errors[1] < 0.5 * errors[0], errors
    with pytest.raises(InputError, match="force_components"):
        b.fit(x, forces=f_a, force_weight=0.1, force_components="bonds", epochs=1)


# ---------------------------------------------------------------------- CG MD
def test_cg_md_stays_finite_and_writes_mdtraj_files(adp_mapping, adp_cg_frames, tmp_path):
    cgs = adp_mapping.cg_system()
    ff = _random_ff(adp_cg_frames)
    traj = cg.simulate_cg(
        ff,
        adp_cg_frames[:8],
        300,
        masses=cgs.masses,
        temperature=300.0,
        report_interval=20,
        topology=cgs.topology,
        seed=1,
    )
    assert traj.positions.shape == (8, 15, 5, 3)
    assert np.isfinite(traj.positions).all()
    r = np.linalg.norm(traj.positions[:, :, 1] - traj.positions[:, :, 0], axis=-1)
    assert r.min() > 0.1 and r.max() < 0.2
    (one,) = traj.save(tmp_path / "all.h5")
    t = mdtraj.load(str(one))
    assert t.n_frames == 8 * 15 and t.n_atoms == 5
    per = traj.save(tmp_path / "w.h5", per_walker=True)
    assert len(per) == 8 and mdtraj.load(str(per[3])).n_frames == 15
    # same seed, same trajectory
    again = cg.simulate_cg(
        ff, adp_cg_frames[:8], 300, masses=cgs.masses, temperature=300.0, report_interval=20, seed=1
    )
    np.testing.assert_array_equal(again.positions, traj.positions)


def test_cg_md_blow_up_raises_a_typed_error(adp_mapping, adp_cg_frames):
    cgs = adp_mapping.cg_system()
    ff = _random_ff(adp_cg_frames)

    class Exploding:
        bond_idx, bond_r0 = ff.bond_idx, ff.bond_r0
        calls = 0

        def forces(self, x):
            self.calls += 1
            e, f = ff.forces(x)
            if self.calls > 6:
                f = f.clone()
                f[2] = float("nan")
            return e, f

    with pytest.raises(cg.CGMDError) as info:
        cg.simulate_cg(Exploding(), adp_cg_frames[:4], 50, masses=cgs.masses, temperature=300.0)
    assert isinstance(info.value, BoltzgenError)
    assert info.value.step == 6 and info.value.walkers == [2]
    # a huge time step stretches bonds past the limit
    with pytest.raises(cg.CGMDError, match="bond longer"):
        cg.simulate_cg(
            ff, adp_cg_frames[:4], 200, masses=cgs.masses, temperature=300.0, timestep=0.05
        )


# ---------------------------------------------------------------------- metrics
def test_fes_plot_takes_weighted_panels(tmp_path):
    from boltzgen.cg.plots import fes_plot

    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, (2000, 2))
    w = np.exp(-3.0 * (x[:, 0] > 0))  # a biased reference: phi > 0 weighs e^-3 less
    path = fes_plot({"reference": (x, w), "model": x}, tmp_path / "fes.png")
    assert path.stat().st_size > 1000


def test_metric_sanity():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, size=(5000, 2))
    p = cg.dihedral_histogram(a)
    assert p.shape == (60, 60) and p.sum() == pytest.approx(1.0)
    assert cg.kl_divergence(p, p) == 0.0
    assert cg.pmf_mse(p, p) == 0.0
    assert cg.unreached_mass(p, p) == 0.0
    res = cg.evaluate(a, a)
    assert res["kl"] == 0.0 and res["pmf_mse_kcal2"] == 0.0
    assert res["df_model_kT"] == pytest.approx(res["df_reference_kT"])
    # model confined to phi < 0: the reference's phi > 0 half is unreached
    b = a.copy()
    b[:, 0] = -np.abs(b[:, 0])
    q = cg.dihedral_histogram(b)
    assert cg.unreached_mass(p, q) == pytest.approx((a[:, 0] > 0).mean(), abs=1e-3)
    assert cg.delta_f(b[:, 0]) == math.inf
    # p twice as likely everywhere in a region: log ratios give the PMF offset kT ln 2
    kt_kcal = KT / 4.184
    q2 = np.full((60, 60), 1.0)
    q2[:30] = 2.0
    q2 /= q2.sum()
    u = np.full((60, 60), 1.0 / 3600)
    expected = np.mean(np.log(np.where(np.arange(60)[:, None] < 30, 2.0, 1.0) * 3600 / 5400) ** 2)
    assert cg.pmf_mse(u, q2) == pytest.approx(kt_kcal**2 * expected)
    assert cg.delta_f([1.0, -1.0, -2.0]) == pytest.approx(math.log(2.0))


# ---------------------------------------------------------------------- end to end
def test_pipeline_end_to_end(adp_md, adp_mapping, tmp_path):
    seen = []
    cfg = {
        "max_frames": 2000,
        "teacher_epochs": 3,
        "teacher_min_steps": 0,  # the 3 epochs as given
        "teacher_finish": 0.34,  # the third epoch
        "n_teacher_samples": 4000,
        "epochs": 4,
        "hidden": [64, 64],
        "n_walkers": 20,
        "n_steps": 300,
        "report_interval": 10,
    }
    summary = cg.train_and_simulate(
        adp_md, adp_mapping, tmp_path / "flow", cfg, progress=lambda f, m: seen.append((f, m))
    )
    assert json.loads((tmp_path / "flow" / "summary.json").read_text())["method"] == "flow"
    assert summary["n_frames"] == 2000
    assert summary["teacher"]["forces"]["n_drawn"] == 4000
    assert summary["teacher"]["finish"]["epoch"] == 2  # it reached the teacher's training
    assert 0.0 <= summary["teacher"]["forces"]["fraction_dropped"] < 0.05
    m = summary["metrics"]
    assert m["kl"] >= 0 and m["pmf_mse_kcal2"] >= 0 and 0 <= m["unreached_mass"] <= 1
    assert m["n_model"] == 20 * 30
    t = mdtraj.load(summary["files"]["trajectory"])
    assert t.n_atoms == 5 and t.n_frames == 600
    assert (tmp_path / "flow" / "fes.png").stat().st_size > 1000
    ff = cg.CGForceField.load(summary["files"]["forcefield"])
    assert ff.n_beads == 5
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] == 1.0
    # classical force matching on mapped all-atom forces, same function
    cfg_f = {**cfg, "method": "forces", "n_steps": 100}
    s2 = cg.train_and_simulate(adp_md, adp_mapping, tmp_path / "fm", cfg_f)
    assert s2["method"] == "forces" and "teacher" not in s2 and s2["n_force_samples"] == 2000
    with pytest.raises(InputError, match="needs all-atom forces"):
        cg.train_and_simulate(adp_md.trajectory[:50], adp_mapping, tmp_path / "x", cfg_f)
    with pytest.raises(ShapeError, match="frame_weights"):
        cg.train_and_simulate(adp_md, adp_mapping, tmp_path / "x", cfg_f, frame_weights=np.ones(3))
    with pytest.raises(InputError, match="unknown CG config"):
        cg.train_and_simulate(adp_md, adp_mapping, tmp_path / "x", {"epochz": 1})
    # the old name still works for one release, with a warning
    with (
        pytest.warns(DeprecationWarning, match="train_and_simulate"),
        pytest.raises(InputError, match="unknown CG config"),
    ):
        cg.run_pipeline(adp_md, adp_mapping, tmp_path / "x", {"epochz": 1})


@pytest.mark.parametrize("interval", [0, -5])
def test_config_rejects_a_report_interval_below_one(interval):
    """report_interval = 0 used to reach a division by zero (a 500 over REST)."""
    with pytest.raises(InputError, match="report_interval"):
        cg.CGConfig(report_interval=interval)


@pytest.mark.parametrize("finish", [-0.1, 1.0, float("nan"), "half"])
def test_config_rejects_a_teacher_finish_outside_zero_one(finish):
    with pytest.raises(InputError, match="teacher_finish"):
        cg.CGConfig(teacher_finish=finish)


@pytest.mark.parametrize("components", ["bonds", "", None])
def test_config_rejects_unknown_teacher_force_components(components):
    with pytest.raises(InputError, match="teacher_force_components"):
        cg.CGConfig(teacher_force_components=components)
