"""Molecular systems: a topology, reference positions and an OpenMM force field.

A :class:`System` is built from PDB text (or a topology + positions, which are written to PDB
text) and a list of OpenMM force-field XML files, in vacuum or an implicit solvent. It is fully
described by :meth:`System.to_spec` (a JSON-able dict with the PDB text), so it can be saved
next to a model and rebuilt in a worker process with :meth:`System.from_spec`.

Units at the boundary: nm, K, kJ/mol.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from boltzgen.constants import DEFAULT_FORCEFIELD, GAS_CONSTANT
from boltzgen.errors import (
    ForceFieldError,
    InputError,
    MalformedPDBError,
    MissingHydrogensError,
    MissingTemplateError,
    ShapeError,
)
from boltzgen.paths import data_file

__all__ = ["CONSTRAINTS", "GAS_CONSTANT", "SOLVENTS", "SPEC_FORMAT", "System"]


#: Solvent name -> extra OpenMM force-field file (``None`` for vacuum). The ``implicit/*.xml``
#: files ship with OpenMM and add a GB force matching the Amber force fields' atom types.
SOLVENTS: dict[str, str | None] = {
    "vacuum": None,
    "obc2": "implicit/obc2.xml",
    "obc1": "implicit/obc1.xml",
    "gbn": "implicit/gbn.xml",
    "gbn2": "implicit/gbn2.xml",
    "hct": "implicit/hct.xml",
}

#: Constraint name -> OpenMM constant. Default ``None``: flows model every bond length.
CONSTRAINTS: dict[str | None, Any] = {
    None: None,
    "none": None,
    "hbonds": app.HBonds,
    "allbonds": app.AllBonds,
    "hangles": app.HAngles,
}

SPEC_FORMAT = "boltzgen.system/1"


def _read_pdb_text(path_or_text: str | os.PathLike[str]) -> str:
    """PDB text from a path or from the text itself (anything with a newline is text)."""
    if isinstance(path_or_text, os.PathLike) or (
        isinstance(path_or_text, str) and "\n" not in path_or_text
    ):
        path = Path(path_or_text)
        if not path.exists():
            raise MalformedPDBError(f"PDB file {str(path)!r} does not exist")
        return path.read_text()
    if not isinstance(path_or_text, str):
        raise MalformedPDBError(f"expected a PDB path or PDB text, got {type(path_or_text)!r}")
    return path_or_text


def _parse_pdb(text: str) -> app.PDBFile:
    if not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
        raise MalformedPDBError("PDB text has no ATOM/HETATM records")
    try:
        pdb = app.PDBFile(io.StringIO(text))
    except Exception as exc:  # OpenMM raises bare Exception/ValueError on bad records
        raise MalformedPDBError(f"cannot parse PDB text: {exc}") from exc
    if pdb.topology.getNumAtoms() == 0:
        raise MalformedPDBError("PDB text contains no atoms")
    xyz = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    if xyz.shape != (pdb.topology.getNumAtoms(), 3) or not np.all(np.isfinite(xyz)):
        raise MalformedPDBError("PDB coordinates are missing or not finite")
    return pdb


def _load_forcefield(files: tuple[str, ...]) -> app.ForceField:
    try:
        return app.ForceField(*files)
    except Exception as exc:
        raise ForceFieldError(f"cannot load force-field files {list(files)}: {exc}") from exc


def _residue_label(res: app.Residue) -> str:
    return f"{res.name}{res.id} (chain {res.chain.id}, index {res.index})"


def _diagnose_template_failure(
    ff: app.ForceField,
    files: tuple[str, ...],
    topology: app.Topology,
    positions: Any,
    exc: Exception,
) -> Exception:
    """Turn a createSystem template failure into MissingHydrogensError or MissingTemplateError
    (``files``: the force-field files ``ff`` was built from, named in the message).

    A residue lacks hydrogens if Modeller.addHydrogens (hydrogens.xml + force-field templates)
    adds atoms to it and the force field then matches it.
    """
    unmatched = ff.getUnmatchedResidues(topology)
    if not unmatched:
        return ForceFieldError(f"OpenMM could not build the system: {exc}")
    labels = ", ".join(_residue_label(r) for r in unmatched)
    try:
        modeller = app.Modeller(topology, positions)
        modeller.addHydrogens(ff)
        still = {r.index for r in ff.getUnmatchedResidues(modeller.topology)}
    except Exception:
        still = None
    if still is not None:
        before = {r.index: sum(1 for _ in r.atoms()) for r in topology.residues()}
        after = {r.index: sum(1 for _ in r.atoms()) for r in modeller.topology.residues()}
        fixed = [r for r in unmatched if r.index not in still and after[r.index] > before[r.index]]
        if fixed:
            names = ", ".join(
                f"{_residue_label(r)} lacks {after[r.index] - before[r.index]} hydrogen(s)"
                for r in fixed
            )
            return MissingHydrogensError(
                f"the structure is missing hydrogens: {names}; add them first, e.g. with "
                "openmm.app.Modeller(top, pos).addHydrogens(forcefield) or pdbfixer"
            )
    return MissingTemplateError(
        f"no force-field template for residue(s) {labels} in {list(files)}; "
        "check the residue names or add a force-field file that defines them"
    )


class System:
    """A molecule with a force field, solvent model and temperature.

    Attributes:
        topology: ``mdtraj.Topology`` of the molecule.
        positions: reference positions, ``np.ndarray`` (n_atoms, 3), float64, nm.
        temperature: K.  kT: kJ/mol.  n_atoms: int.
        solvent: ``"vacuum"`` or an implicit model name in :data:`SOLVENTS`.
        forcefield: tuple of OpenMM force-field XML file names (without the solvent file).
        constraints: ``None`` (default, no constraints) or ``"hbonds"``, ``"allbonds"``, ``"hangles"``.
        openmm_system / openmm_topology: the built OpenMM objects.
    """

    def __init__(
        self,
        pdb_text: str,
        forcefield: tuple[str, ...] | list[str] | str = DEFAULT_FORCEFIELD,
        solvent: str = "vacuum",
        temperature: float = 300.0,
        constraints: str | None = None,
    ) -> None:
        if isinstance(forcefield, str):
            forcefield = (forcefield,)
        self.forcefield: tuple[str, ...] = tuple(str(f) for f in forcefield)
        if solvent not in SOLVENTS:
            raise ForceFieldError(
                f"unknown solvent {solvent!r}; choose one of {sorted(SOLVENTS)} "
                "(implicit models need no extra file; explicit water is not supported)"
            )
        self.solvent = solvent
        key = constraints.lower() if isinstance(constraints, str) else constraints
        if key not in CONSTRAINTS:
            raise ForceFieldError(
                f"unknown constraints {constraints!r}; choose None, 'hbonds', 'allbonds' or 'hangles'"
            )
        self.constraints: str | None = None if key in (None, "none") else key
        temperature = float(temperature)
        if not np.isfinite(temperature) or temperature <= 0:
            raise ForceFieldError(
                f"temperature must be a positive number of kelvin, got {temperature}"
            )
        self.temperature = temperature
        self.pdb_text = pdb_text

        pdb = _parse_pdb(pdb_text)
        files = self.forcefield + ((SOLVENTS[solvent],) if SOLVENTS[solvent] else ())
        ff = _load_forcefield(files)
        try:
            omm_system = ff.createSystem(
                pdb.topology,
                nonbondedMethod=app.NoCutoff,
                constraints=CONSTRAINTS[key],
                rigidWater=False,
                removeCMMotion=False,
            )
        except ValueError as exc:
            raise _diagnose_template_failure(ff, files, pdb.topology, pdb.positions, exc) from exc
        self.openmm_topology: app.Topology = pdb.topology
        self.openmm_system: openmm.System = omm_system
        self.topology: mdtraj.Topology = mdtraj.Topology.from_openmm(pdb.topology)
        self.positions: np.ndarray = np.asarray(
            pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_pdb(
        cls,
        path_or_text: str | os.PathLike[str],
        forcefield: tuple[str, ...] | list[str] | str = DEFAULT_FORCEFIELD,
        solvent: str = "vacuum",
        temperature: float = 300.0,
        constraints: str | None = None,
    ) -> System:
        """Build from a PDB file path or PDB text (hydrogens must be present)."""
        return cls(_read_pdb_text(path_or_text), forcefield, solvent, temperature, constraints)

    @classmethod
    def from_topology(
        cls,
        topology: mdtraj.Topology | app.Topology,
        positions: Any,
        forcefield: tuple[str, ...] | list[str] | str = DEFAULT_FORCEFIELD,
        solvent: str = "vacuum",
        temperature: float = 300.0,
        constraints: str | None = None,
    ) -> System:
        """Build from an mdtraj or OpenMM topology and positions (n_atoms, 3) in nm
        (an OpenMM Quantity is converted)."""
        omm_top = topology.to_openmm() if isinstance(topology, mdtraj.Topology) else topology
        if isinstance(positions, unit.Quantity):
            positions = positions.value_in_unit(unit.nanometer)
        xyz = np.asarray(positions, dtype=np.float64)
        if xyz.shape != (omm_top.getNumAtoms(), 3):
            raise ShapeError(
                f"positions must have shape ({omm_top.getNumAtoms()}, 3) in nm, got {xyz.shape}"
            )
        buf = io.StringIO()
        app.PDBFile.writeFile(omm_top, xyz * 10.0 * unit.angstrom, buf, keepIds=True)
        return cls(buf.getvalue(), forcefield, solvent, temperature, constraints)

    @classmethod
    def alanine_dipeptide(
        cls, solvent: str = "vacuum", temperature: float = 300.0, constraints: str | None = None
    ) -> System:
        """ACE-ALA-NME (22 atoms) with amber99sbildn, shipped in ``data/``."""
        return cls.from_pdb(
            data_file("alanine-dipeptide.pdb"),
            forcefield=DEFAULT_FORCEFIELD,
            solvent=solvent,
            temperature=temperature,
            constraints=constraints,
        )

    # ------------------------------------------------------------------ serialisation
    def start_positions(self, positions: Any = None) -> np.ndarray:
        """Where a simulation starts: ``positions`` (n_atoms, 3) nm checked for shape and
        finiteness, or the system's own (energy-minimised PDB) positions if None."""
        start = self.positions if positions is None else np.asarray(positions, dtype=np.float64)
        if start.shape != (self.n_atoms, 3) or not np.isfinite(start).all():
            raise InputError(
                f"positions must be finite ({self.n_atoms}, 3) nm, got shape {start.shape}"
            )
        return start

    def to_spec(self) -> dict[str, Any]:
        """JSON-able description from which :meth:`from_spec` rebuilds an identical system."""
        return {
            "format": SPEC_FORMAT,
            "pdb": self.pdb_text,
            "forcefield": list(self.forcefield),
            "solvent": self.solvent,
            "temperature": self.temperature,
            "constraints": self.constraints,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> System:
        """Inverse of :meth:`to_spec`."""
        if not isinstance(spec, dict) or "pdb" not in spec:
            raise MalformedPDBError("system spec must be a dict with a 'pdb' entry (see to_spec)")
        fmt = spec.get("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise ForceFieldError(
                f"unsupported system spec format {fmt!r} (expected {SPEC_FORMAT})"
            )
        return cls(
            spec["pdb"],
            tuple(spec.get("forcefield", DEFAULT_FORCEFIELD)),
            spec.get("solvent", "vacuum"),
            spec.get("temperature", 300.0),
            spec.get("constraints"),
        )

    def serialize_openmm(self) -> str:
        """The OpenMM System as XML (what energy workers build their Context from)."""
        return openmm.XmlSerializer.serialize(self.openmm_system)

    # ------------------------------------------------------------------ properties
    @property
    def n_atoms(self) -> int:
        return self.topology.n_atoms

    @property
    def kT(self) -> float:
        """Thermal energy R T in kJ/mol."""
        return GAS_CONSTANT * self.temperature

    def __repr__(self) -> str:
        return (
            f"System(n_atoms={self.n_atoms}, forcefield={list(self.forcefield)}, "
            f"solvent={self.solvent!r}, temperature={self.temperature} K, "
            f"constraints={self.constraints!r})"
        )
