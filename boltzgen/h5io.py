"""The one HDF5 file format of boltzgen's frames: MD data, samples and refined samples.

Every file is an ordinary mdtraj HDF5 trajectory, written by mdtraj itself (``mdtraj.load``
opens it: positions float32 nm, ``/time`` ps, ``/potentialEnergy`` kJ/mol, ``/topology``). The
extra per-frame arrays are added through PyTables' public API (``tables.open_file``) after
mdtraj has closed the file, never through mdtraj's private handle:

* MD files (:func:`boltzgen.md.simulate`, replica exchange, the ``simulate`` job), written by
  :class:`TrajectoryWriter`, read by :func:`read_md`:
  ``/forces`` float32 (n_frames, n_atoms, 3) kJ/mol/nm; ``/boltzgen_system`` the
  :meth:`System.to_spec` JSON (uint8 bytes); ``/boltzgen_md`` the run's settings JSON.
* Samples files (:meth:`boltzgen.samples.Samples.save`, also refined samples), written by
  :func:`write_samples`, read by :func:`read_samples`: ``/log_weights``, ``/log_q``,
  ``/reduced_energy`` float64 (n,) and optional per-frame arrays under ``/boltzgen_extra``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mdtraj
import numpy as np

from boltzgen.errors import InputError, StructureError

if TYPE_CHECKING:
    from boltzgen.systems import System

__all__ = [
    "SAMPLE_ARRAYS",
    "TrajectoryWriter",
    "read_md",
    "read_samples",
    "write_samples",
]

#: The per-frame arrays of a samples file (float64, one entry per frame).
SAMPLE_ARRAYS = ("log_weights", "log_q", "reduced_energy")
_FILTERS = {"complevel": 4, "complib": "zlib", "shuffle": True}
_EXTRA = "boltzgen_extra"


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _read_json(h: Any, node: str) -> Any:
    return json.loads(bytes(h.get_node(node)[:]).decode()) if node in h else None


class TrajectoryWriter:
    """Appends frames to an MD file: mdtraj's arrays plus a compressed ``/forces`` EArray.

    ``TrajectoryWriter(out, system, metadata)`` creates the file (topology, system spec,
    settings); ``append(xyz, times, energy, forces, a, b)`` writes frames a:b of the given
    arrays (nm, ps, kJ/mol, kJ/mol/nm); ``close()``. Each append opens and closes the file
    (mdtraj first, then PyTables), so a crashed run leaves a readable file of the frames
    appended so far. Files it writes are read by :func:`read_md` (:func:`boltzgen.md.load_md`).
    """

    def __init__(
        self, out: str | os.PathLike[str], system: System, metadata: dict[str, Any]
    ) -> None:
        import tables

        self.path = Path(out)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with mdtraj.formats.HDF5TrajectoryFile(str(self.path), "w", force_overwrite=True) as f:
            f.topology = system.topology
        with tables.open_file(str(self.path), "a") as h:
            forces = h.create_earray(
                "/",
                "forces",
                atom=tables.Float32Atom(),
                shape=(0, system.n_atoms, 3),
                filters=tables.Filters(**_FILTERS),
                title="forces in kJ/mol/nm, one row per frame",
            )
            forces.attrs["units"] = "kilojoule/mole/nanometer"
            h.create_array("/", "boltzgen_system", obj=_json_bytes(system.to_spec()))
            h.create_array("/", "boltzgen_md", obj=_json_bytes(metadata))

    def append(self, xyz, times, energy, forces, a: int, b: int) -> None:  # noqa: ANN001
        import tables

        if b <= a:
            return
        with mdtraj.formats.HDF5TrajectoryFile(str(self.path), "a") as f:
            f.write(
                coordinates=xyz[a:b],
                time=times[a:b],
                potentialEnergy=np.asarray(energy[a:b], dtype=np.float32),
            )
        with tables.open_file(str(self.path), "a") as h:
            h.get_node("/forces").append(np.asarray(forces[a:b], dtype=np.float32))

    def close(self) -> None:
        """Nothing stays open between appends; kept so callers can close in ``finally``."""


def read_md(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An MD file's contents: ``trajectory`` (mdtraj), ``potential_energy`` (n,) kJ/mol
    float64, ``forces`` (n, n_atoms, 3) kJ/mol/nm float32, ``time`` (n,) ps, ``metadata``
    (dict, empty if absent), ``system_spec`` (dict or None). Names what is wrong with files
    that are not MD files."""
    import tables

    path = Path(path)
    if not path.exists():
        raise InputError(f"MD file {str(path)!r} does not exist")
    if not tables.is_hdf5_file(str(path)):
        raise StructureError(f"{path.name} is not an HDF5 file (an MD file from simulate/remd)")
    try:
        traj = mdtraj.load(str(path))
    except Exception as exc:  # mdtraj/PyTables raise assorted types for foreign HDF5 files
        raise StructureError(f"{path.name} is not an mdtraj HDF5 trajectory: {exc}") from exc
    with tables.open_file(str(path), "r") as h:
        if "/forces" not in h or "/potentialEnergy" not in h:
            raise StructureError(f"{path} has no forces/potentialEnergy arrays (not from simulate)")
        forces = h.get_node("/forces")[:]
        energy = h.get_node("/potentialEnergy")[:].astype(np.float64)
        spec = _read_json(h, "/boltzgen_system")
        meta = _read_json(h, "/boltzgen_md") or {}
    if not (len(forces) == len(energy) == traj.n_frames):
        raise StructureError(
            f"{path}: frame counts differ (positions {traj.n_frames}, energies {len(energy)}, "
            f"forces {len(forces)})"
        )
    return {
        "trajectory": traj,
        "potential_energy": energy,
        "forces": forces,
        "time": np.asarray(traj.time),
        "metadata": meta,
        "system_spec": spec,
    }


def write_samples(
    path: str | os.PathLike[str],
    topology: mdtraj.Topology,
    positions: np.ndarray,
    arrays: dict[str, np.ndarray],
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a samples file: positions (n, n_atoms, 3) nm by mdtraj, then each of
    :data:`SAMPLE_ARRAYS` from ``arrays`` ((n,) float64) and the ``extra`` per-frame arrays."""
    import tables

    missing = [k for k in SAMPLE_ARRAYS if k not in arrays]
    if missing:
        raise InputError(f"samples need the arrays {', '.join(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with mdtraj.formats.HDF5TrajectoryFile(str(path), "w", force_overwrite=True) as f:
        f.topology = topology
        f.write(coordinates=positions)
    filters = tables.Filters(**_FILTERS)
    with tables.open_file(str(path), "a") as h:
        for name in SAMPLE_ARRAYS:
            h.create_carray("/", name, obj=np.asarray(arrays[name]), filters=filters)
        if extra:
            group = h.create_group("/", _EXTRA)
            for k, v in extra.items():
                h.create_carray(group, k, obj=np.ascontiguousarray(v), filters=filters)
    return path


def read_samples(
    path: str | os.PathLike[str],
) -> tuple[mdtraj.Trajectory, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(trajectory, the :data:`SAMPLE_ARRAYS` by name, extra arrays by name) of a file
    written by :func:`write_samples`."""
    import tables

    path = Path(path)
    if not path.exists():
        raise InputError(f"samples file {str(path)!r} does not exist")
    traj = mdtraj.load(str(path))
    with tables.open_file(str(path), "r") as h:
        missing = [k for k in SAMPLE_ARRAYS if f"/{k}" not in h]
        if missing:
            raise StructureError(
                f"{path} has no {', '.join(missing)} (not a samples file; for MD frames use "
                "Samples.from_trajectory(mdtraj.load(path)))"
            )
        arrays = {k: h.get_node(f"/{k}")[:] for k in SAMPLE_ARRAYS}
        extra = {}
        if f"/{_EXTRA}" in h:
            extra = {node.name: node[:] for node in h.list_nodes(f"/{_EXTRA}")}
    return traj, arrays, extra
