"""boltzgen.systems: building, errors, spec round trip."""

from __future__ import annotations

import json

import numpy as np
import openmm
import pytest

from boltzgen.errors import (
    ForceFieldError,
    MalformedPDBError,
    MissingHydrogensError,
    MissingTemplateError,
    ShapeError,
)
from boltzgen.systems import SOLVENTS, System


def _atom_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("ATOM", "HETATM"))]


def test_alanine_dipeptide_attributes():
    s = System.alanine_dipeptide()
    assert s.n_atoms == 22
    assert s.positions.shape == (22, 3) and s.positions.dtype == np.float64
    # nm, not Angstrom: ADP spans well under 1 nm
    assert 0.3 < np.ptp(s.positions, axis=0).max() < 1.0
    assert s.kT == pytest.approx(0.00831446 * 300.0, rel=1e-5)
    assert [r.name for r in s.topology.residues] == ["ACE", "ALA", "NME"]
    assert s.solvent == "vacuum" and s.constraints is None
    assert s.openmm_system.getNumConstraints() == 0
    names = {type(f).__name__ for f in s.openmm_system.getForces()}
    assert "NonbondedForce" in names and "CMMotionRemover" not in names


@pytest.mark.parametrize("solvent", sorted(SOLVENTS))
def test_solvents_build_and_add_gb_force(solvent):
    s = System.alanine_dipeptide(solvent=solvent)
    n_forces = s.openmm_system.getNumForces()
    vac = System.alanine_dipeptide().openmm_system.getNumForces()
    assert n_forces == vac + (0 if solvent == "vacuum" else 1)


def test_constraints_configurable():
    s = System.alanine_dipeptide(constraints="HBonds")
    assert s.openmm_system.getNumConstraints() == 12  # 12 X-H bonds in ADP
    with pytest.raises(ForceFieldError, match="constraints"):
        System.alanine_dipeptide(constraints="rigid")


def test_unknown_solvent_and_forcefield():
    with pytest.raises(ForceFieldError, match="unknown solvent"):
        System.alanine_dipeptide(solvent="tip3p-ish")
    with pytest.raises(ForceFieldError, match="no-such-ff"):
        System.from_pdb(System.alanine_dipeptide().pdb_text, forcefield=("no-such-ff.xml",))


def test_spec_round_trip_is_json_and_identical(adp_pdb):
    s = System.from_pdb(adp_pdb, solvent="obc2", temperature=350.0)
    spec = json.loads(json.dumps(s.to_spec()))
    s2 = System.from_spec(spec)
    assert (s2.solvent, s2.temperature, s2.forcefield) == ("obc2", 350.0, s.forcefield)
    np.testing.assert_array_equal(s2.positions, s.positions)
    assert s2.serialize_openmm() == s.serialize_openmm()
    with pytest.raises(MalformedPDBError):
        System.from_spec({"forcefield": ["amber99sbildn.xml"]})


def test_from_topology_mdtraj_and_openmm():
    s = System.alanine_dipeptide()
    a = System.from_topology(s.topology, s.positions)
    b = System.from_topology(s.openmm_topology, s.positions * openmm.unit.nanometer)
    np.testing.assert_allclose(a.positions, s.positions, atol=1e-4)
    np.testing.assert_allclose(b.positions, s.positions, atol=1e-4)
    with pytest.raises(ShapeError):
        System.from_topology(s.topology, s.positions[:5])


def test_malformed_pdb():
    with pytest.raises(MalformedPDBError, match="no ATOM"):
        System.from_pdb("HEADER nothing here\nEND\n")
    with pytest.raises(MalformedPDBError, match="does not exist"):
        System.from_pdb("/no/such/file.pdb")
    text = System.alanine_dipeptide().pdb_text
    bad = text.replace(_atom_lines(text)[3], _atom_lines(text)[3][:30] + " x.y  zzzz  ")
    with pytest.raises(MalformedPDBError):
        System.from_pdb(bad)


def test_unknown_residue_gives_missing_template():
    text = System.alanine_dipeptide().pdb_text.replace(" ALA A", " XYZ A")
    with pytest.raises(MissingTemplateError, match=r"XYZ2.*\['amber99sbildn.xml'\]"):
        System.from_pdb(text)
    # the message names every force-field file, the solvent file included
    with pytest.raises(MissingTemplateError, match=r"implicit/obc2.xml"):
        System.from_pdb(text, solvent="obc2")


def test_stripped_hydrogens_named():
    text = System.alanine_dipeptide().pdb_text
    kept = [
        line
        for line in text.splitlines()
        if not (
            line.startswith(("ATOM", "HETATM"))
            and line[17:20] == "ALA"
            and line[76:78].strip() == "H"
        )
    ]
    with pytest.raises(MissingHydrogensError, match=r"ALA2 .* lacks 5 hydrogen"):
        System.from_pdb("\n".join(kept) + "\n")
