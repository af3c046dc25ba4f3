"""Internal coordinates: Z-matrix construction, exact log-dets, round trips, normalisation."""

from __future__ import annotations

import math
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from boltzgen.coordinates import (
    BoxNormalizer,
    ICNormalizer,
    InternalCoordinates,
    build_zmatrix,
    dihedral_indices,
)
from boltzgen.coordinates.reference import reference_forward, reference_inverse
from boltzgen.errors import InputError, ShapeError, TopologyError

DATA = Path(__file__).resolve().parents[1] / "data"
MOLECULES = ["alanine-dipeptide", "ace-tyr-nme", "trp-cage"]


@pytest.fixture(scope="module", params=MOLECULES)
def mol(request):
    return md.load(DATA / f"{request.param}.pdb")


@pytest.fixture(scope="module")
def adp():
    return md.load(DATA / "alanine-dipeptide.pdb")


def _perturbed(traj, n: int, seed: int, scale: float = 1.0, dtype=torch.float64):
    """n conformations: random torsion/angle/bond perturbations plus random rigid motions."""
    ic = InternalCoordinates.from_topology(traj.topology, "keep").double()
    x0 = torch.tensor(traj.xyz[:1], dtype=torch.float64)
    z, _ = ic(x0)
    gen = torch.Generator().manual_seed(seed)
    z = z.repeat(n, 1)
    noise = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    z[:, ic.torsion_columns] += 0.3 * scale * noise[:, ic.torsion_columns]
    z[:, ic.angle_columns] += 0.05 * scale * noise[:, ic.angle_columns]
    z[:, ic.bond_columns] += 0.003 * scale * noise[:, ic.bond_columns]
    z[:, ic.translation_columns] += noise[:, ic.translation_columns]
    z[:, ic.orientation_columns] = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 6 - 3
    z[:, ic.orientation_columns[1]] = z[:, ic.orientation_columns[1]].abs().clamp(0.2, 2.9)
    x, _ = ic.inverse(z)
    return x.to(dtype)


_CACHE: dict[str, md.Trajectory] = {}


def _load(name: str) -> md.Trajectory:
    if name not in _CACHE:
        _CACHE[name] = md.load(DATA / f"{name}.pdb")
    return _CACHE[name]


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


# ---------------------------------------------------------------- Z-matrix construction


def test_zmatrix_structure(mol):
    top = mol.topology
    zm = build_zmatrix(top)
    rows = zm.rows
    n = top.n_atoms
    assert sorted(rows[:, 0]) == list(range(n))
    assert (build_zmatrix(top).rows == rows).all()  # deterministic
    bonds = {frozenset((b[0].index, b[1].index)) for b in top.bonds}
    rank = np.empty(n, int)
    rank[rows[:, 0]] = np.arange(n)
    for k in range(1, n):
        a, p, q, r = rows[k]
        assert frozenset((a, p)) in bonds  # bond partner is a real bond
        assert rank[p] < k and (k < 2 or rank[q] < k) and (k < 3 or rank[r] < k)
        if k >= 3:
            assert frozenset((p, q)) in bonds  # angle along bonds
    heavy = np.array([a.element.symbol != "H" for a in top.atoms])
    n_heavy = int(heavy.sum())
    assert heavy[rows[:n_heavy, 0]].all()  # heavy atoms before all hydrogens
    # ring-closure bonds are not DOFs: tree edges = n - 1
    n_rings = len(bonds) - (n - 1)
    assert n_rings == {22: 0, 33: 1, 304: 7}[n]


def test_named_dihedrals_are_columns(mol):
    top = mol.topology
    ic = InternalCoordinates.from_topology(top).double()
    z, _ = ic(torch.tensor(mol.xyz, dtype=torch.float64))
    n_found = 0
    for name in ("phi", "psi", "omega", "chi1", "chi2", "chi3", "chi4"):
        quads = dihedral_indices(top, name)
        if len(quads) == 0:
            continue
        cols = ic.torsion_columns_of(quads)
        ref = md.compute_dihedrals(mol, quads)[0]
        diff = np.angle(np.exp(1j * (z[0, cols].numpy() - ref)))
        assert np.abs(diff).max() < 1e-5, name
        n_found += len(quads)
    assert n_found >= 2


def test_adp_phi_psi(adp):
    top = adp.topology
    np.testing.assert_array_equal(dihedral_indices(top, "phi"), [[4, 6, 8, 14]])
    np.testing.assert_array_equal(dihedral_indices(top, "PSI"), [[6, 8, 14, 16]])
    ic = InternalCoordinates.from_topology(top)
    cphi, cpsi = ic.torsion_column((4, 6, 8, 14)), ic.torsion_column((16, 14, 8, 6))
    assert ic.circular[cphi] and ic.circular[cpsi] and cphi != cpsi
    with pytest.raises(TopologyError):
        ic.torsion_column((0, 1, 2, 3))
    with pytest.raises(InputError):
        dihedral_indices(top, "chi9")


def test_disconnected_fragments(adp, tmp_path):
    # ADP plus one water far away: two fragments
    water = (
        "HETATM    1  O   HOH B   1      20.000  20.000  20.000  1.00  0.00           O\n"
        "HETATM    2  H1  HOH B   1      20.957  20.000  20.000  1.00  0.00           H\n"
        "HETATM    3  H2  HOH B   1      19.760  20.927  20.000  1.00  0.00           H\n"
        "CONECT    1    2    3\nEND\n"
    )
    (tmp_path / "water.pdb").write_text(water)
    wat = md.load_pdb(str(tmp_path / "water.pdb"))
    both = adp.stack(wat)
    with pytest.raises(TopologyError, match="disconnected fragments"):
        InternalCoordinates.from_topology(both.topology)
    with pytest.raises(InputError, match="positions"):
        InternalCoordinates.from_topology(both.topology, fragments="connect")
    ic = InternalCoordinates.from_topology(
        both.topology, "keep", positions=both.xyz[0], fragments="connect"
    ).double()
    assert build_zmatrix(both.topology, positions=both.xyz[0], fragments="connect").pseudo_bonds
    x = torch.tensor(both.xyz, dtype=torch.float64)
    z, ld = ic(x)
    xb, ldi = ic.inverse(z)
    assert (xb - x).abs().max() < 1e-10
    assert torch.allclose(ld, -ldi)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_roundtrip_keep(mol, dtype, tol):
    ic = InternalCoordinates.from_topology(mol.topology, "keep").to(dtype)
    x = _perturbed(mol, 16, seed=1, dtype=dtype)
    z, ld = ic(x)
    assert z.dtype == dtype and z.shape == (16, 3 * mol.n_atoms) and ld.shape == (16,)
    xb, ldi = ic.inverse(z)
    assert (xb - x).abs().max().item() < tol
    assert torch.allclose(ld, -ldi, rtol=1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_roundtrip_remove(mol, dtype, tol):
    ic = InternalCoordinates.from_topology(mol.topology, "remove").to(dtype)
    x = _perturbed(mol, 16, seed=2, dtype=dtype)
    z, ld = ic(x)
    assert z.shape == (16, 3 * mol.n_atoms - 6)
    xc, ldi = ic.inverse(z)
    # canonical frame: root at origin, atom 1 on +x, atom 2 in the xy plane (y > 0)
    zm = ic.zmatrix
    assert xc[:, zm[0, 0]].abs().max() == 0
    assert xc[:, zm[1, 0], 1:].abs().max() == 0 and (xc[:, zm[1, 0], 0] > 0).all()
    assert xc[:, zm[2, 0], 2].abs().max() < tol and (xc[:, zm[2, 0], 1] > 0).all()
    # same shape as x (rigid motion only), and a second round trip is exact
    assert (_pairwise(xc) - _pairwise(x)).abs().max().item() < 2 * tol
    z2, _ = ic(xc)
    xc2, _ = ic.inverse(z2)
    assert (xc2 - xc).abs().max().item() < tol
    assert torch.allclose(ld, -ldi, rtol=1e-4 if dtype == torch.float32 else 1e-10)


def test_reference_implementation_agrees(mol):
    ic = InternalCoordinates.from_topology(mol.topology).double()
    x = _perturbed(mol, 4, seed=3)
    z, ld = ic(x)
    zr, ldr = reference_forward(x.numpy(), ic.zmatrix.numpy())
    diff = np.angle(np.exp(1j * (z.numpy() - zr)))  # torsions may differ by 2 pi at +-pi
    assert np.abs(diff).max() < 1e-9
    np.testing.assert_allclose(ld.numpy(), ldr, rtol=1e-9)
    xr = reference_inverse(z.numpy(), ic.zmatrix.numpy())
    np.testing.assert_allclose(ic.inverse(z)[0].numpy(), xr, atol=1e-10)


# ---------------------------------------------------------------- log-determinants


def _autograd_logdet_keep(ic, x):
    jac = torch.func.jacrev(lambda xi: ic(xi[None])[0][0])(x)
    jac = jac.reshape(ic.dim, -1)
    return torch.linalg.slogdet(jac)[1]


def _log_sin_beta(ic_keep, x):
    z, _ = ic_keep(x)
    return torch.log(torch.sin(z[:, ic_keep.orientation_columns[1]]))


def test_logdet_full_matches_autograd(mol):
    ic = InternalCoordinates.from_topology(mol.topology, "keep").double()
    n_conf = 2 if mol.n_atoms > 100 else 3
    x = _perturbed(mol, n_conf, seed=4)
    _, ld = ic(x)
    _, ldi = ic.inverse(ic(x)[0])
    for i in range(n_conf):
        ref = _autograd_logdet_keep(ic, x[i])
        assert abs(ld[i].item() - ref.item()) < 1e-8 * max(1.0, abs(ref.item()))
        # inverse direction: slogdet of dx/dz
        if mol.n_atoms < 100:
            z = ic(x[i : i + 1])[0][0]
            jinv = torch.func.jacrev(lambda zi: ic.inverse(zi[None])[0][0].reshape(-1))(z)
            assert abs(ldi[i].item() - torch.linalg.slogdet(jinv)[1].item()) < 1e-8 * abs(
                ref.item()
            )


def test_logdet_remove_is_full_minus_rigid_part(mol):
    keep = InternalCoordinates.from_topology(mol.topology, "keep").double()
    rem = InternalCoordinates.from_topology(mol.topology, "remove").double()
    x = _perturbed(mol, 2, seed=5)
    _, ld_rem = rem(x)
    for i in range(2):
        full = _autograd_logdet_keep(keep, x[i])
        expected = full + _log_sin_beta(keep, x[i : i + 1])[0]
        assert abs(ld_rem[i].item() - expected.item()) < 1e-8 * max(1.0, abs(full.item()))


def test_logdet_remove_coarea(adp):
    """Independent check of the rigid="remove" log-det by the coarea formula:
    dx = dz dt dmu(R) sqrt(det G) / sqrt(det J J^T), G the Gram matrix of the 6 rigid-motion
    generators at x, J = dz/dx (3n-6, 3n). So logdet = 0.5 log det JJ^T - 0.5 log det G."""
    ic = InternalCoordinates.from_topology(adp.topology, "remove").double()
    x = _perturbed(adp, 3, seed=6)
    _, ld = ic(x)
    eye = torch.eye(3, dtype=torch.float64)
    for i in range(3):
        jac = torch.func.jacrev(lambda xi: ic(xi[None])[0][0])(x[i]).reshape(ic.dim, -1)
        gens = [eye[k].expand_as(x[i]) for k in range(3)]
        gens += [torch.linalg.cross(eye[k].expand_as(x[i]), x[i]) for k in range(3)]
        a = torch.stack([gv.reshape(-1) for gv in gens])
        expected = 0.5 * torch.logdet(jac @ jac.T) - 0.5 * torch.logdet(a @ a.T)
        assert abs(ld[i].item() - expected.item()) < 1e-8 * abs(expected.item())


# ---------------------------------------------------------------- degenerate geometry


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("angle", [1e-7, 0.0, math.pi - 1e-7, math.pi])
def test_near_collinear_no_nan(adp, dtype, angle):
    for rigid in ("remove", "keep"):
        ic = InternalCoordinates.from_topology(adp.topology, rigid).to(dtype)
        z0, _ = ic(torch.tensor(adp.xyz, dtype=dtype))
        z = z0.clone()
        z[:, ic.angle_columns[[0, 3, 7]]] = angle  # atom 2's angle and two later ones
        z.requires_grad_(True)
        x, ldi = ic.inverse(z)
        assert torch.isfinite(x).all()
        assert not torch.isnan(ldi).any()
        (x.square().sum() + ldi.clamp_min(-1e4).sum()).backward()
        assert torch.isfinite(z.grad).all()
        xg = x.detach().requires_grad_(True)
        z2, ld = ic(xg)
        assert torch.isfinite(z2).all() and not torch.isnan(ld).any()
        (z2.square().sum() + ld.clamp(-1e4, 1e4).sum()).backward()
        assert torch.isfinite(xg.grad).all()
        if angle == 1e-7 and dtype == torch.float64:
            assert torch.isfinite(ld).all()
            assert torch.allclose(
                z2[:, ic.angle_columns[[0, 3, 7]]], z[:, ic.angle_columns[[0, 3, 7]]], atol=1e-12
            )


# ---------------------------------------------------------------- property-based


@settings(max_examples=40, deadline=None)
@given(
    which=st.sampled_from(MOLECULES[:2]),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.0, 3.0),
    angles=st.lists(st.floats(-10, 10), min_size=3, max_size=3),
    shift=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
)
def test_property_rigid_invariance_and_roundtrip(which, seed, scale, angles, shift):
    adp = _load(which)
    x = _perturbed(adp, 2, seed=seed, scale=scale)
    rot = torch.tensor(_rotation(*angles), dtype=torch.float64)
    y = x @ rot.T + torch.tensor(shift, dtype=torch.float64)
    rem = InternalCoordinates.from_topology(adp.topology, "remove").double()
    zx, ldx = rem(x)
    zy, ldy = rem(y)
    d = torch.remainder(zx - zy + math.pi, 2 * math.pi) - math.pi
    assert d.abs().max() < 1e-9
    assert torch.allclose(ldx, ldy, rtol=1e-10)
    keep = InternalCoordinates.from_topology(adp.topology, "keep").double()
    zk, ldk = keep(y)
    yb, ldki = keep.inverse(zk)
    assert (yb - y).abs().max() < 1e-9
    assert torch.allclose(ldk, -ldki, rtol=1e-10)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    def rz(t):
        return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])

    def ry(t):
        return np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])

    return rz(a) @ ry(b) @ rz(c)


# ---------------------------------------------------------------- module behaviour


def test_dtype_and_state_roundtrip(adp, tmp_path):
    ic = InternalCoordinates.from_topology(adp.topology, "keep")
    assert ic.zmatrix.dtype == torch.long and ic.zmatrix.shape == (22, 4)
    assert ic.dim == 66 and ic.circular.sum() == 19 + 2
    ic64 = ic.to(torch.float64)
    assert ic64.zmatrix.dtype == torch.long
    path = tmp_path / "ic.pt"
    torch.save(ic.state_dict(), path)
    state = torch.load(path)
    ic2 = InternalCoordinates.from_state_dict(state)
    ic3 = InternalCoordinates.from_topology(adp.topology, "keep")
    ic3.load_state_dict(state)
    x = _perturbed(adp, 3, seed=7, dtype=torch.float32)
    for other in (ic2, ic3):
        assert other.rigid == "keep"
        assert torch.equal(other(x)[0], ic(x)[0])
    with pytest.raises(ShapeError):
        ic(x[:, :5])
    with pytest.raises(ShapeError):
        ic.inverse(torch.zeros(3, 60))
    with pytest.raises(InputError):
        ic(torch.full_like(x, float("nan")))


def test_normalizer(adp):
    norm = ICNormalizer.from_topology(adp.topology, "remove").double()
    ic = norm.ic
    x = _perturbed(adp, 64, seed=8, scale=0.5)
    norm.fit_bounds(x, margin=0.1)
    assert torch.equal(norm.circular, ic.circular) and norm.dim == 60
    u, ld = norm(x)
    assert u.shape == (64, 60) and (u >= 0).all() and (u <= 1).all()
    assert (u[:, norm.circular] < 1).all()
    z, ld_ic = ic(x)
    box_ld = -torch.log(norm.box.high - norm.box.low).sum()
    assert torch.allclose(ld, ld_ic + box_ld)
    expected_torsion = (z[:, ic.torsion_columns] + math.pi) / (2 * math.pi)
    assert torch.allclose(u[:, ic.torsion_columns], torch.remainder(expected_torsion, 1.0))
    xb, ldi = norm.inverse(u)
    assert torch.allclose(ldi, -ld)
    assert (_pairwise(xb) - _pairwise(x)).abs().max() < 1e-10
    # bounds respect the natural limits and contain the data
    lo, hi = norm.box.low, norm.box.high
    assert (lo[ic.bond_columns] > 0).all() and (hi[ic.angle_columns] <= math.pi).all()
    # out of bounds: a stretched bond is clamped and gets log-det -inf (never wrapped)
    xs = x.clone()
    zm = ic.zmatrix
    xs[0, zm[1, 0]] = xs[0, zm[1, 1]] + 3.0 * (xs[0, zm[1, 0]] - xs[0, zm[1, 1]])
    us, lds = norm(xs)
    assert lds[0] == -math.inf and torch.isfinite(lds[1:]).all()
    assert (us >= 0).all() and (us <= 1).all()
    assert not norm.box.in_bounds(ic(xs)[0])[0] and norm.box.in_bounds(ic(xs)[0])[1:].all()
    strict = BoxNormalizer(ic.circular, lo, hi, out_of_bounds="error")
    with pytest.raises(InputError, match="outside"):
        strict(ic(xs)[0])
    # k-sigma bounds also contain the data
    norm.box.fit_bounds(z, k_sigma=4.0)
    assert torch.isfinite(norm(x)[1]).all()


def test_normalizer_keep_mode(adp):
    norm = ICNormalizer.from_topology(adp.topology, "keep").double()
    x = _perturbed(adp, 32, seed=9, scale=0.5)
    norm.fit_bounds(x)
    u, ld = norm(x)
    assert norm.circular.sum() == 19 + 2 and (u >= 0).all() and (u <= 1).all()
    xb, ldi = norm.inverse(u)
    assert (xb - x).abs().max() < 1e-10 and torch.allclose(ld, -ldi)


def test_openmm_builds_systems_from_test_molecules():
    import openmm.app as app

    ff = app.ForceField("amber99sbildn.xml")
    for name in MOLECULES:
        pdb = app.PDBFile(str(DATA / f"{name}.pdb"))
        system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
        assert system.getNumParticles() == pdb.topology.getNumAtoms()


def test_normalizer_forcefield_bounds():
    import openmm.app as app

    ff = app.ForceField("amber99sbildn.xml")
    for name in MOLECULES:
        pdb = app.PDBFile(str(DATA / f"{name}.pdb"))
        system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
        traj = md.load(DATA / f"{name}.pdb")
        norm = ICNormalizer.from_topology(traj.topology).double()
        norm.fit_bounds_from_forcefield(system, temperature=300.0, k_sigma=6.0)
        u, ld = norm(torch.tensor(traj.xyz, dtype=torch.float64))
        assert torch.isfinite(ld).all()  # the minimised structure is inside
        ic = norm.ic
        noncirc = torch.cat([ic.bond_columns, ic.angle_columns])
        assert (u[0, noncirc] - 0.5).abs().max() < 0.4
        if name == "alanine-dipeptide":  # CA-CB bond: amber r0 = 0.1526 nm, centred bounds
            row = int(np.nonzero(ic.zmatrix[:, 0].numpy() == 10)[0][0])
            col = ic.bond_columns[row - 1]
            mid = 0.5 * (norm.box.low[col] + norm.box.high[col])
            assert abs(mid.item() - 0.1526) < 1e-6


def test_options_and_openmm_topology(adp):
    import openmm.app as app

    omm = app.PDBFile(str(DATA / "alanine-dipeptide.pdb")).topology
    assert (build_zmatrix(omm).rows == build_zmatrix(adp.topology).rows).all()
    assert (build_zmatrix(adp).rows == build_zmatrix(adp.topology).rows).all()  # .topology
    with pytest.raises(InputError):
        build_zmatrix("not a topology")
    proper = InternalCoordinates.from_topology(adp.topology, "keep", torsions="proper").double()
    sibling = InternalCoordinates.from_topology(adp.topology, "keep").double()
    assert not torch.equal(proper.zmatrix, sibling.zmatrix)  # methyl H use other partners
    # proper torsions: the torsion partner is bonded to the angle partner (or, next to the
    # root, to the bond partner)
    bonds = {frozenset((b[0].index, b[1].index)) for b in adp.topology.bonds}
    rows = proper.zmatrix.numpy()
    root = rows[0, 0]
    for _, p, q, r in rows[3:]:
        assert frozenset((q, r)) in bonds or (q == root and frozenset((p, r)) in bonds)
    x = _perturbed(adp, 2, seed=11)
    z, ld = proper(x)
    assert (proper.inverse(z)[0] - x).abs().max() < 1e-10
    assert abs(ld[0].item() - _autograd_logdet_keep(proper, x[0]).item()) < 1e-8 * abs(ld[0].item())
    with pytest.raises(InputError):
        InternalCoordinates.from_topology(adp.topology, rigid="drop")
    with pytest.raises(InputError):
        build_zmatrix(adp.topology, torsions="improper")
    with pytest.raises(TopologyError, match="at least 3"):
        build_zmatrix(adp.topology.subset([0, 1]))


def test_box_normalizer_logistic_tails_are_soft_smooth_and_exact():
    circ = torch.tensor([True, False, False, False])
    low = torch.tensor([-math.pi, 0.10, 1.8, 0.0])
    high = torch.tensor([math.pi, 0.12, 2.0, 3.0])
    lower = torch.tensor([-math.inf, 0.0, 0.0, 0.0])
    upper = torch.tensor([math.inf, math.inf, math.pi, math.pi])
    box = BoxNormalizer(circ, low, high, lower, upper, tails="logistic").double()
    # column 3 spans [0, pi]: its tails would leave the natural range, so it keeps a hard wall
    assert box.soft.tolist() == [False, True, True, False]
    g = torch.Generator().manual_seed(0)
    z = torch.stack(
        [
            torch.rand(64, generator=g, dtype=torch.float64) * 6 - 3,
            0.06 + 0.1 * torch.rand(64, generator=g, dtype=torch.float64),  # far past both bounds
            1.7 + 0.4 * torch.rand(64, generator=g, dtype=torch.float64),
            3.0 * torch.rand(64, generator=g, dtype=torch.float64),
        ],
        -1,
    )
    u, ld = box(z)
    assert torch.isfinite(ld).all() and ((u > 0) & (u < 1)).all() and box.in_bounds(z).all()
    zb, ldi = box.inverse(u)
    assert (zb - z).abs().max() < 1e-12 and torch.allclose(ldi, -ld)
    # log-det against the autograd Jacobian (diagonal map)
    for i in range(8):
        jac = torch.autograd.functional.jacobian(lambda v: box(v[None])[0][0], z[i])
        assert torch.allclose(torch.linalg.slogdet(jac)[1], ld[i], atol=1e-10)
    # the density decays smoothly past a soft bound: log-det keeps falling, never -inf
    zz = torch.tensor([[0.0, 0.12, 1.9, 1.0], [0.0, 0.14, 1.9, 1.0], [0.0, 0.20, 1.9, 1.0]])
    lds = box(zz.double())[1]
    assert lds[0] > lds[1] > lds[2] > -math.inf
    # a saved state loads into a fresh normalizer and recomputes which columns are soft
    fresh = BoxNormalizer(circ, lower_limits=lower, upper_limits=upper, tails="logistic").double()
    fresh.load_state_dict(box.state_dict())
    assert fresh.soft.tolist() == box.soft.tolist() and torch.equal(fresh(z)[0], u)
    # float32 u at 0 or 1 (the flow's rounding) still inverts to finite coordinates
    edge = box.float().inverse(torch.tensor([[0.5, 0.0, 1.0, 0.5]]))
    assert torch.isfinite(edge[0]).all() and torch.isfinite(edge[1]).all()
    with pytest.raises(InputError, match="tails"):
        BoxNormalizer(circ, tails="gaussian")
