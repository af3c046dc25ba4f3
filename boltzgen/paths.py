"""Where shipped data live. ``BOLTZGEN_DATA`` overrides (used by the Docker image)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """Directory with the shipped inputs (``data/`` at the repository root by default)."""
    env = os.environ.get("BOLTZGEN_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def data_file(name: str) -> Path:
    """Path of a shipped data file; raises FileNotFoundError naming the directory searched."""
    path = data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"shipped data file {name!r} not found in {data_dir()}")
    return path
