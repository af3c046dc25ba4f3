"""Rebuild data/trp-cage.pdb and data/ace-tyr-nme.pdb from PDB entry 1L2Y (model 1).

Usage: python data/build_test_molecules.py path/to/1l2y.pdb
Hydrogens are deleted and re-added by OpenMM Modeller (pH 7, amber99sbildn names), then the
structure is minimised in amber99sbildn vacuum on the Reference platform. Modeller places
hydrogens with some randomness, so a rebuild differs from the shipped files by ~0.03 A.
"""

import io
import sys
from pathlib import Path

import openmm as mm
import openmm.app as app

ff = app.ForceField("amber99sbildn.xml")
with open(sys.argv[1]) as fh:
    lines = [ln for ln in fh if ln.startswith("ATOM")]


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
