"""What lets a rerun skip finished stages and what reports progress: the stage records in
``checkpoint_dir/pipeline_stages.json`` (:class:`Stages`, keyed by a fingerprint of each
stage's inputs) and the overall / per-stage progress (:class:`Clock`)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from boltzgen.jsonable import json_clean
from boltzgen.pipeline.config import STAGES, PipelineConfig

__all__ = [
    "DATA_FIELDS",
    "SAMPLE_FIELDS",
    "TRAIN_FIELDS",
    "Clock",
    "ProgressFn",
    "StageProgressFn",
    "Stages",
    "fingerprint",
    "stage_fields",
    "write_json",
]

ProgressFn = Callable[[float, str], None]
StageProgressFn = Callable[[str, float, str], None]

_STATE_FILE = "pipeline_stages.json"

# the settings each stage's result depends on (its fingerprint chains the earlier stages')
DATA_FIELDS = (
    "budget_minutes",
    "data_share",
    "seed",
    "sampler",
    "t_max",
    "target_acceptance",
    "max_replicas",
    "timestep",
    "platform",
)
TRAIN_FIELDS = (
    "n_flows",
    "train_share",
    "sample_share",
    "n_samples",
    "refine",
    "flow",
    "n_layers",
    "hidden",
    "lr",
    "min_state_share",
    "min_state_frames",
    "min_weight_kish",
)
SAMPLE_FIELDS = ("n_samples", "sample_share", "refine", "refine_steps")


def stage_fields(config: PipelineConfig, names: Sequence[str]) -> dict[str, Any]:
    return {k: getattr(config, k) for k in names}


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a crash leaves the old file or the new one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_clean(obj), indent=2))
    os.replace(tmp, path)


class Stages:
    """The stage records in ``checkpoint_dir/pipeline_stages.json``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / _STATE_FILE
        self.reload()

    def reload(self) -> None:
        """Read the records from the file again (another process may have written them)."""
        self.records: dict[str, Any] = {}
        if self.path.exists():
            try:
                self.records = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                self.records = {}

    def done(self, stage: str, fingerprint: str, files: Sequence[str] = ()) -> dict | None:
        rec = self.records.get(stage)
        if not rec or rec.get("fingerprint") != fingerprint or not rec.get("finished"):
            return None
        if not all((self.dir / f).exists() for f in files):
            return None
        return rec["result"]

    def save(self, stage: str, fingerprint: str, result: dict[str, Any]) -> None:
        self.records[stage] = {"fingerprint": fingerprint, "finished": True, "result": result}
        write_json(self.path, self.records)

    def start(self, stage: str, fingerprint: str) -> bool:
        """Mark ``stage`` started; True if an unfinished attempt with the same inputs exists
        (its partial files may be resumed)."""
        rec = self.records.get(stage) or {}
        same = rec.get("fingerprint") == fingerprint
        self.records[stage] = {"fingerprint": fingerprint, "finished": False}
        write_json(self.path, self.records)
        return same


class Clock:
    """Overall and per-stage progress, weighted by the stages' budget shares."""

    def __init__(
        self,
        split: dict[str, dict[str, float]],
        progress: ProgressFn | None,
        stage_progress: StageProgressFn | None,
    ) -> None:
        shares = {s: split[s]["share"] for s in ("data", "training", "sampling")}
        rest = split["analysis"]["share"]
        shares["system"] = 0.3 * rest
        shares["analysis"] = 0.7 * rest
        self.start: dict[str, float] = {}
        acc = 0.0
        for s in STAGES:
            self.start[s] = acc
            acc += shares[s]
        self.shares = shares
        self.progress = progress
        self.stage_progress = stage_progress

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        f = min(max(float(fraction), 0.0), 1.0)
        if self.stage_progress is not None:
            self.stage_progress(stage, f, message)
        if self.progress is not None:
            self.progress(
                min(1.0, self.start[stage] + self.shares[stage] * f), f"{stage}: {message}"
            )

    def part(self, k: int, n: int) -> Callable[[str, float, str], None]:
        """The clock of the k-th of n runs of the training and sampling stages (independent
        flows): run k covers the k-th 1/n of those stage bars and of the overall training +
        sampling stretch, so overall progress stays monotone across the runs."""

        def clock(stage: str, fraction: float, message: str) -> None:
            if n == 1 or stage not in ("training", "sampling"):
                self(stage, fraction, message)
                return
            f = min(max(float(fraction), 0.0), 1.0)
            message = f"flow {k + 1}/{n}: {message}"
            if self.stage_progress is not None:
                self.stage_progress(stage, (k + f) / n, message)
            if self.progress is not None:
                st, sh = self.shares["training"], self.shares["sampling"]
                within = (f * st if stage == "training" else st + f * sh) / (st + sh)
                overall = self.start["training"] + (st + sh) * (k + within) / n
                self.progress(min(1.0, overall), f"{stage}: {message}")

        return clock
