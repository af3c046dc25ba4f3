"""Files under ``state_dir``: where job directories and model files live, and the media types
artifacts are recorded with.

One place for the layout, because the worker writes it and the routes read and delete it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from server.settings import Settings

MEDIA_TYPES = {
    ".h5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
    ".npz": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".pt": "application/octet-stream",
    ".pdb": "chemical/x-pdb",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".csv": "text/csv",
    ".txt": "text/plain",
}


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def job_root(settings: Settings, job_id: str) -> Path:
    """``jobs/<job id>/``: ``checkpoint/`` (kept across attempts) and ``attempt-<n>/``."""
    return Path(settings.state_dir) / "jobs" / job_id


def model_dir(settings: Settings, job_id: str) -> Path:
    """``models/<job id>/``: a registered model's file, copied out of its job directory so
    deleting the job keeps the model."""
    return Path(settings.state_dir) / "models" / job_id
