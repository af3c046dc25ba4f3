"""What the system page shows of an uploaded PDB: its header records (TITLE, REMARK, ...) as
text, and its residues with their atoms, read from the fixed PDB columns."""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER_RECORDS = ("HEADER", "TITLE", "COMPND", "SOURCE", "AUTHOR", "REMARK")


@dataclass
class Residue:
    chain: str
    number: str
    name: str
    atoms: list[tuple[str, str, str]] = field(default_factory=list)  # serial, name, element


@dataclass
class PdbView:
    header: list[str]
    residues: list[Residue]

    @property
    def n_atoms(self) -> int:
        return sum(len(r.atoms) for r in self.residues)


def read_pdb(text: str, max_header_lines: int = 200) -> PdbView:
    header: list[str] = []
    residues: list[Residue] = []
    for line in text.splitlines():
        record = line[:6].strip()
        if record in HEADER_RECORDS and len(header) < max_header_lines:
            header.append(line.rstrip())
        elif record in ("ATOM", "HETATM"):
            chain, number, name = line[21:22].strip(), line[22:27].strip(), line[17:20].strip()
            if not residues or (residues[-1].chain, residues[-1].number) != (chain, number):
                residues.append(Residue(chain, number, name))
            element = line[76:78].strip() or line[12:16].strip()[:1]
            residues[-1].atoms.append((line[6:11].strip(), line[12:16].strip(), element))
    return PdbView(header, residues)
