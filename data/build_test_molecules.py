"""Rebuild data/trp-cage.pdb and data/ace-tyr-nme.pdb from PDB entry 1L2Y (model 1), and the
held-out capped peptides data/peptides/*.pdb from data/trp-cage.pdb.

Usage: python data/build_test_molecules.py path/to/1l2y.pdb
       python data/build_test_molecules.py --peptides     (reads data/trp-cage.pdb)
       python data/build_test_molecules.py --ala 5        (data/peptides/ace-ala5-nme.pdb)
Hydrogens are deleted and re-added by OpenMM Modeller (pH 7, amber99sbildn names), then the
structure is minimised in amber99sbildn vacuum on the Reference platform. Modeller places
hydrogens with some randomness, so a rebuild differs from the shipped files by ~0.03 A.
"""

import io
import sys
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.app as app

ff = app.ForceField("amber99sbildn.xml")
HERE = Path(__file__).parent


def finish(pdbtext, out, remark):
    pdb = app.PDBFile(io.StringIO(pdbtext))
    mod = app.Modeller(pdb.topology, pdb.positions)
    mod.delete([a for a in mod.topology.atoms() if a.element.symbol == "H"])
    mod.addHydrogens(ff, pH=7.0)
    system = ff.createSystem(mod.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integ = mm.VerletIntegrator(0.001)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(mod.positions)
    mm.LocalEnergyMinimizer.minimize(ctx, 1.0, 2000)
    st = ctx.getState(getPositions=True, getEnergy=True)
    print(out, mod.topology.getNumAtoms(), st.getPotentialEnergy())
    with open(out, "w") as fh:
        for r in remark:
            fh.write(f"REMARK   {r}\n")
        app.PDBFile.writeFile(mod.topology, st.getPositions(), fh, keepIds=False)


def capped(lines, first: int, last: int) -> str:
    """Residues first..last of a PDB's ATOM lines (heavy atoms) with an ACE cap made of residue
    first-1's CA (-> CH3), C, O and an NME cap of residue last+1's N, CA (-> C)."""
    out = []
    for ln in lines:
        name, num = ln[12:16].strip(), int(ln[22:26])
        if ln[76:78].strip() == "H" or name.startswith("H"):
            continue
        if num == first - 1 and name in ("CA", "C", "O"):
            nn = "CH3" if name == "CA" else name
            out.append(ln[:12] + f" {nn:<3}" + " ACE" + ln[20:22] + "   1" + ln[26:])
        elif first <= num <= last:
            out.append(ln[:22] + f"{num - first + 2:4d}" + ln[26:])
        elif num == last + 1 and name in ("N", "CA"):
            nn = "C" if name == "CA" else name
            out.append(
                ln[:12] + f" {nn:<3}" + " NME" + ln[20:22] + f"{last - first + 3:4d}" + ln[26:]
            )
    return "".join(out) + "END\n"


# held-out peptides (not tuned on): (file, first, last) residues of Trp-cage
PEPTIDES = [
    ("ace-pro-nme", 12, 12),  # one residue, proline
    ("ace-trp-nme", 6, 6),  # one residue, ring side chain (indole)
    ("ace-ser-ser-nme", 13, 14),  # two residues, polar side chains
    ("ace-gly-gly-pro-nme", 10, 12),  # three residues, glycines and a proline
]


def main_1l2y(path: str) -> None:
    with open(path) as fh:
        lines = [ln for ln in fh if ln.startswith("ATOM")]
    # whole Trp-cage
    finish(
        "".join(lines) + "END\n",
        str(Path(__file__).parent / "trp-cage.pdb"),
        [
            "Trp-cage TC5b (PDB 1L2Y model 1, NLYIQWLKDGGPSSGRPPPS), 20 residues, charged termini",
            "hydrogens re-added by OpenMM Modeller (pH 7), minimised in amber99sbildn vacuum",
        ],
    )

    # ACE-TYR-NME cut from residues 2-4
    out = []
    for ln in lines:
        name, num = ln[12:16].strip(), int(ln[22:26])
        if num == 2 and name in ("CA", "C", "O"):
            nn = "CH3" if name == "CA" else name
            out.append(ln[:12] + f" {nn:<3}" + " ACE" + ln[20:22] + "   1" + ln[26:])
        elif num == 3 and not name.startswith("H"):
            out.append(ln[:22] + "   2" + ln[26:])
        elif num == 4 and name in ("N", "CA"):
            nn = "C" if name == "CA" else name
            out.append(ln[:12] + f" {nn:<3}" + " NME" + ln[20:22] + "   3" + ln[26:])
    finish(
        "".join(out) + "END\n",
        str(Path(__file__).parent / "ace-tyr-nme.pdb"),
        [
            "ACE-TYR-NME cut from PDB 1L2Y model 1 (residues 2-4, caps from LEU2/ILE4 backbone)",
            "hydrogens added by OpenMM Modeller (pH 7), minimised in amber99sbildn vacuum",
        ],
    )


def main_peptides() -> None:
    with open(HERE / "trp-cage.pdb") as fh:
        lines = [ln for ln in fh if ln.startswith("ATOM")]
    (HERE / "peptides").mkdir(exist_ok=True)
    for name, first, last in PEPTIDES:
        finish(
            capped(lines, first, last),
            str(HERE / "peptides" / f"{name}.pdb"),
            [
                f"{name.upper()} cut from data/trp-cage.pdb (1L2Y model 1) residues "
                f"{first}-{last}, caps from residues {first - 1} and {last + 1}",
                "hydrogens added by OpenMM Modeller (pH 7), minimised in amber99sbildn vacuum",
            ],
        )


def _place(a, b, c, bond: float, angle: float, torsion: float) -> np.ndarray:
    """Atom d with |cd| = bond (A), angle bcd and dihedral abcd (degrees), NeRF."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = bond * np.array(
        [-np.cos(angle), np.sin(angle) * np.cos(torsion), np.sin(angle) * np.sin(torsion)]
    )
    return c + d[0] * bc + d[1] * m + d[2] * n


def ala_peptide(n_res: int, phi: float = -70.0, psi: float = 140.0) -> str:
    """Heavy atoms of ACE-(ALA)n-NME from ideal geometry (polyproline-like phi/psi, trans
    peptide bonds) as PDB text; CB on the L side (dihedral C(i-1)-N-CA-CB = phi - 123)."""
    atoms: list[tuple[str, str, int, np.ndarray]] = []
    ch3 = np.zeros(3)
    c = np.array([1.52, 0.0, 0.0])
    o = _place(np.array([0.0, 1.0, 0.0]), ch3, c, 1.23, 120.5, 0.0)
    atoms += [("CH3", "ACE", 1, ch3), ("C", "ACE", 1, c), ("O", "ACE", 1, o)]
    prev1, prev0 = ch3, c  # torsion references along the chain
    n = _place(o, ch3, c, 1.33, 116.0, 180.0)
    for r in range(2, n_res + 2):
        ca = _place(prev1, prev0, n, 1.46, 122.0, 180.0)  # omega
        cc = _place(prev0, n, ca, 1.52, 111.0, phi)
        cb = _place(prev0, n, ca, 1.53, 110.5, phi - 123.0)
        oo = _place(n, ca, cc, 1.23, 120.5, psi + 180.0)
        atoms += [("N", "ALA", r, n), ("CA", "ALA", r, ca), ("C", "ALA", r, cc)]
        atoms += [("O", "ALA", r, oo), ("CB", "ALA", r, cb)]
        prev1, prev0 = ca, cc
        n = _place(n, ca, cc, 1.33, 116.0, psi)
    cn = _place(prev1, prev0, n, 1.46, 122.0, 180.0)
    atoms += [("N", "NME", n_res + 2, n), ("C", "NME", n_res + 2, cn)]
    lines = [
        f"ATOM  {i + 1:5d} {name:<4} {res} A{num:4d}    {x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00"
        f"          {name[0]:>2}\n"
        for i, (name, res, num, (x, y, z)) in enumerate(atoms)
    ]
    return "".join(lines) + "END\n"


def main_ala(n_res: int) -> None:
    (HERE / "peptides").mkdir(exist_ok=True)
    finish(
        ala_peptide(n_res),
        str(HERE / "peptides" / f"ace-ala{n_res}-nme.pdb"),
        [
            f"ACE-(ALA){n_res}-NME built from ideal geometry (phi -70, psi 140, trans omega)",
            "hydrogens added by OpenMM Modeller (pH 7), minimised in amber99sbildn vacuum",
        ],
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ala"]:
        main_ala(int(sys.argv[2]))
    elif sys.argv[1:] == ["--peptides"]:
        main_peptides()
    else:
        main_1l2y(sys.argv[1])
