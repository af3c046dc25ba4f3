"""Job kind ``energy``: reduced energies and forces of given frames."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from boltzgen.jobs.params import PlatformName, SystemParams
from boltzgen.jobs.registry import ProgressFn, job_kind


class EnergyParams(SystemParams):
    """Reduced energies and forces of given frames (default: the system's own positions)."""

    positions: list[list[list[float]]] | None = Field(
        None, description="frames (B, n_atoms, 3) in nm; default: the uploaded structure"
    )
    platform: PlatformName = "auto"

    @field_validator("positions")
    @classmethod
    def _check_positions(cls, v: list | None, info: ValidationInfo) -> list | None:
        # checked at submit (a 422 naming the field), not only when the worker runs the job
        if v is None:
            return v
        pdb = str((info.data.get("system") or {}).get("pdb", ""))
        n_atoms = sum(line.startswith(("ATOM", "HETATM")) for line in pdb.splitlines())
        shapes = {(len(frame), *{len(atom) for atom in frame}) for frame in v}
        if not v or shapes != {(n_atoms, 3)}:
            raise ValueError(f"must be (B, {n_atoms}, 3) nm for this system")
        if not all(math.isfinite(c) for frame in v for atom in frame for c in atom):
            raise ValueError("contains NaN or inf")
        return v


@job_kind("energy", EnergyParams)
def energy(
    params: EnergyParams, workdir: Path, progress: ProgressFn, checkpoint_dir: Path
) -> dict[str, Any]:
    """Evaluate energies.npz: reduced energies (kT), potential energies (kJ/mol), forces."""
    import numpy as np

    from boltzgen.energy import EnergyModel
    from boltzgen.errors import ShapeError

    system = params.load_system()
    x = system.positions[None] if params.positions is None else np.asarray(params.positions)
    if x.ndim != 3 or x.shape[1:] != (system.n_atoms, 3):
        raise ShapeError(f"positions must be (B, {system.n_atoms}, 3) nm, got {x.shape}")
    progress(0.0, f"evaluating {len(x)} frame(s)")
    with EnergyModel(system, platform=params.platform) as model:
        u, forces = model.energy_and_forces(x.astype(np.float64))
    np.savez(
        workdir / "energies.npz",
        reduced_energy=u,
        potential_energy=u * system.kT,
        forces=forces,
        kT=system.kT,
    )
    progress(1.0, "done")
    finite = np.isfinite(u)
    return {
        "n_frames": int(len(u)),
        "n_invalid": int((~finite).sum()),
        "min_reduced_energy": float(u[finite].min()) if finite.any() else None,
        "mean_reduced_energy": float(u[finite].mean()) if finite.any() else None,
        "kT_kj_mol": float(system.kT),
    }
