"""Shared fixtures. Tests run on the OpenMM Reference platform with one torch thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


@pytest.fixture(scope="session")
def adp_pdb() -> Path:
    return DATA / "alanine-dipeptide.pdb"
