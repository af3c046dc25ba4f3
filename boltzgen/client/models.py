"""Deprecated alias of ``boltzgen.schemas`` (the wire schemas moved there); kept for one
release so ``from boltzgen.client.models import JobInfo`` keeps working."""

from __future__ import annotations

import warnings

from boltzgen.schemas import (
    TERMINAL_STATUSES,
    ArtifactInfo,
    ArtifactList,
    JobCreate,
    JobError,
    JobInfo,
    JobPage,
    JobStatus,
    KeyCreate,
    KeyInfo,
    KindInfo,
    ModelInfo,
    ModelPage,
    Page,
    Problem,
    SystemCreate,
    SystemInfo,
    SystemPage,
)

__all__ = [
    "TERMINAL_STATUSES",
    "ArtifactInfo",
    "ArtifactList",
    "JobCreate",
    "JobError",
    "JobInfo",
    "JobPage",
    "JobStatus",
    "KeyCreate",
    "KeyInfo",
    "KindInfo",
    "ModelInfo",
    "ModelPage",
    "Page",
    "Problem",
    "SystemCreate",
    "SystemInfo",
    "SystemPage",
]

warnings.warn(
    "boltzgen.client.models is deprecated; import from boltzgen.schemas",
    DeprecationWarning,
    stacklevel=2,
)
