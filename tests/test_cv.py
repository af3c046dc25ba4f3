"""boltzgen.cv: CV names with residue numbers ("phi:2"), backbone_dihedrals, one formula."""

from __future__ import annotations

import io
import math
from pathlib import Path

import mdtraj
import numpy as np
import openmm.app as app
import pytest
import torch

import boltzgen as bg
from boltzgen.coordinates import geometry
from boltzgen.cv import Dihedral, backbone_dihedrals, dihedral, parse_cv_name, state_dihedrals
from boltzgen.errors import InputError

DATA = Path(__file__).resolve().parents[1] / "data"


def _ace_ala_ala_nme_pdb() -> str:
    """ACE1-ALA2-ALA3-NME4 cut from Trp-cage (data/trp-cage.pdb residues 1-4) the way
    data/build_test_molecules.py cuts ACE-TYR-NME: caps from the neighbours' backbone, side
    chains cut back to CB, hydrogens re-added by OpenMM Modeller."""
    keep = {
        1: {"CA": "CH3", "C": "C", "O": "O"},  # ACE
        2: {"N": "N", "CA": "CA", "C": "C", "O": "O", "CB": "CB"},  # LEU -> ALA
        3: {"N": "N", "CA": "CA", "C": "C", "O": "O", "CB": "CB"},  # TYR -> ALA
        4: {"N": "N", "CA": "C"},  # NME
    }
    resname = {1: "ACE", 2: "ALA", 3: "ALA", 4: "NME"}
    out = []
    for line in (DATA / "trp-cage.pdb").read_text().splitlines():
        if not line.startswith("ATOM"):
            continue
        name, num = line[12:16].strip(), int(line[22:26])
        if num in keep and name in keep[num]:
            new = keep[num][name]
            out.append(line[:12] + f" {new:<3}" + f" {resname[num]}" + line[20:])
    pdb = app.PDBFile(io.StringIO("\n".join(out) + "\nEND\n"))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(app.ForceField("amber99sbildn.xml"), pH=7.0)
    buf = io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, buf, keepIds=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def aan() -> bg.System:
    return bg.System.from_pdb(_ace_ala_ala_nme_pdb())


@pytest.fixture(scope="module")
def adp() -> bg.System:
    return bg.System.alanine_dipeptide()


def _frames(system: bg.System, n: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return system.positions[None] + 0.03 * rng.normal(size=(n, system.n_atoms, 3))


def _labels(system: bg.System, d: Dihedral) -> list[str]:
    return [str(system.topology.atom(a)) for a in d.atoms]


def test_parse_cv_name():
    assert parse_cv_name("phi") == ("phi", None)
    assert parse_cv_name("phi:2") == ("phi", 2)
    assert parse_cv_name(" PSI : 3 ") == ("psi", 3)
    assert parse_cv_name("chi1:12") == ("chi1", 12)
    assert parse_cv_name("omega:-1") == ("omega", -1)  # PDB numbers may be negative
    with pytest.raises(InputError, match="unknown dihedral 'kappa'.*phi, psi, omega, chi1"):
        parse_cv_name("kappa:2")
    for bad in ("phi:", "phi:x", "phi:2.5", "phi:1_0", "phi:2:3"):
        with pytest.raises(InputError, match="must be an integer PDB residue number"):
            parse_cv_name(bad)
    with pytest.raises(InputError, match="must be a string"):
        parse_cv_name(2)


def test_multi_residue_names_pick_the_numbered_residue(aan):
    assert [str(r) for r in aan.topology.residues] == ["ACE1", "ALA2", "ALA3", "NME4"]
    phi2, phi3 = dihedral(aan, "phi:2"), dihedral(aan, "phi:3")
    assert _labels(aan, phi2) == ["ACE1-C", "ALA2-N", "ALA2-CA", "ALA2-C"]
    assert _labels(aan, phi3) == ["ALA2-C", "ALA3-N", "ALA3-CA", "ALA3-C"]
    assert _labels(aan, dihedral(aan, "psi:3")) == ["ALA3-N", "ALA3-CA", "ALA3-C", "NME4-N"]
    assert _labels(aan, dihedral(aan, "omega:2")) == ["ALA2-CA", "ALA2-C", "ALA3-N", "ALA3-CA"]
    assert phi2.name == "phi:2" and phi3.name == "phi:3"
    # the bare name keeps its meaning: the first residue that has the dihedral
    assert dihedral(aan, "phi").atoms == phi2.atoms and dihedral(aan, "phi").name == "phi"
    assert dihedral(aan, "phi", index=1).atoms == phi3.atoms
    # values equal mdtraj's, in NumPy and torch
    x = _frames(aan)
    traj = mdtraj.Trajectory(x.astype(np.float32), aan.topology)
    ref = mdtraj.compute_phi(traj)[1]
    np.testing.assert_allclose(phi3(x), ref[:, 1], atol=1e-4)
    np.testing.assert_allclose(phi3(torch.from_numpy(x)).numpy(), ref[:, 1], atol=1e-4)


def test_residue_number_is_the_pdb_number_not_the_index(aan):
    top = aan.topology.copy()
    for res in top.residues:
        res.resSeq += 10  # ACE11 ALA12 ALA13 NME14
    assert dihedral(top, "phi:12").atoms == dihedral(aan, "phi:2").atoms
    with pytest.raises(InputError, match="no residue numbered 2:.*ALA12, ALA13"):
        dihedral(top, "phi:2")


def test_bad_residue_names_the_residues_that_have_it(aan):
    with pytest.raises(InputError, match=r"residue ACE1 \(chain 0\) has no phi.*: ALA2, ALA3"):
        dihedral(aan, "phi:1")
    with pytest.raises(InputError, match=r"no residue numbered 7:.*psi.*: ALA2, ALA3"):
        dihedral(aan, "psi:7")
    with pytest.raises(InputError, match="the topology has no chi1"):
        dihedral(aan, "chi1:2")  # alanine has no chi1
    with pytest.raises(InputError, match="not both"):
        dihedral(aan, "phi:2", index=1)
    with pytest.raises(InputError, match="unknown dihedral"):
        dihedral(aan, "phj:2")


def test_side_chain_dihedrals_by_residue():
    tyr = mdtraj.load(str(DATA / "ace-tyr-nme.pdb")).topology
    chi1, chi2 = dihedral(tyr, "chi1:2"), dihedral(tyr, "chi2:2")
    assert [str(tyr.atom(a)) for a in chi1.atoms] == ["TYR2-N", "TYR2-CA", "TYR2-CB", "TYR2-CG"]
    assert chi2.atoms == dihedral(tyr, "chi2").atoms
    with pytest.raises(InputError, match=r"residue NME3 \(chain 0\) has no chi1.*: TYR2"):
        dihedral(tyr, "chi1:3")


def test_backbone_dihedrals(aan, adp):
    bb = backbone_dihedrals(aan)
    assert list(bb) == ["phi:2", "psi:2", "phi:3", "psi:3"]
    for key, d in bb.items():
        assert d == dihedral(aan, key) and d.name == key
    assert list(backbone_dihedrals(adp)) == ["phi:2", "psi:2"]
    assert backbone_dihedrals(adp)["phi:2"].atoms == dihedral(adp, "phi").atoms
    # a 20-residue protein: phi of residues 2-20, psi of 1-19, matching mdtraj
    traj = mdtraj.load(str(DATA / "trp-cage.pdb"))
    bb = backbone_dihedrals(traj)
    assert [k for k in bb if k.startswith("phi")] == [f"phi:{i}" for i in range(2, 21)]
    assert [k for k in bb if k.startswith("psi")] == [f"psi:{i}" for i in range(1, 20)]
    np.testing.assert_array_equal(
        [bb[f"psi:{i}"].atoms for i in range(1, 20)], mdtraj.compute_psi(traj)[0]
    )
    # residue numbers repeated over two chains make names ambiguous
    two = traj.topology.join(traj.topology)
    with pytest.raises(InputError, match="would be ambiguous"):
        backbone_dihedrals(two)
    with pytest.raises(InputError, match=r"ambiguous.*chain 0.*chain 1"):
        dihedral(two, "phi:5")
    assert backbone_dihedrals(mdtraj.Topology()) == {}


def test_state_dihedrals_use_psi_where_a_ring_pins_phi(adp):
    assert list(state_dihedrals(adp)) == ["phi:2"]
    # residues 10-19 of Trp-cage: GLY GLY PRO SER SER GLY ARG PRO PRO PRO
    sd = state_dihedrals(mdtraj.load(str(DATA / "trp-cage.pdb")).topology)
    assert [k for k in sd if 10 <= int(k.split(":")[1]) <= 19] == [
        "phi:10",
        "phi:11",
        "psi:12",
        "phi:13",
        "phi:14",
        "phi:15",
        "phi:16",
        "psi:17",
        "psi:18",
        "psi:19",
    ]
    assert len(sd) == 19  # every residue with a phi
    gp = state_dihedrals(mdtraj.load(str(DATA / "peptides" / "ace-gly-gly-pro-nme.pdb")).topology)
    assert list(gp) == ["phi:2", "phi:3", "psi:4"]
    assert sd["psi:12"].name == "psi:12"


def test_one_dihedral_formula_for_numpy_and_torch(adp):
    phi = dihedral(adp, "phi")
    x = _frames(adp, n=8, seed=4)
    xt = torch.tensor(x, requires_grad=True)
    p = [xt[:, i, :].T for i in phi.atoms]
    expected = geometry.dihedral(*p)
    torch.testing.assert_close(phi(xt), expected, rtol=0, atol=0)
    np.testing.assert_array_equal(phi(x), expected.detach().numpy())
    phi(xt).sum().backward()
    assert torch.isfinite(xt.grad).all()
    # degenerate (collinear) geometry: a finite value and a finite gradient
    line = torch.zeros(1, adp.n_atoms, 3, dtype=torch.float64)
    line[0, :, 0] = torch.arange(adp.n_atoms, dtype=torch.float64)
    line.requires_grad_(True)
    v = phi(line)
    v.sum().backward()
    assert torch.isfinite(v).all() and torch.isfinite(line.grad).all()
    assert phi.period == pytest.approx(2 * math.pi)
