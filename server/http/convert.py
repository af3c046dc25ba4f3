"""Store rows (dicts) -> wire schemas (``boltzgen.schemas``): timestamps become datetimes,
server-side fields (system spec, file paths, owner, lease) stay out, links are added."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from boltzgen.schemas import ArtifactInfo, JobInfo, KeyInfo, ModelInfo, SystemInfo

M = TypeVar("M", bound=BaseModel)


def ts(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(x, UTC)


def _file_links(collection: str, ident: str) -> dict[str, str]:
    """The links of a downloadable resource: itself and its file."""
    return {"self": f"/v1/{collection}/{ident}", "content": f"/v1/{collection}/{ident}/content"}


def job_info(job: dict[str, Any]) -> JobInfo:
    base = f"/v1/jobs/{job['id']}"
    params = job.get("client_params")
    if params is None:
        params = {
            k: v for k, v in (job.get("params") or {}).items() if k not in ("system", "model")
        }
    return JobInfo(
        id=job["id"],
        kind=job["kind"],
        status=job["status"],
        progress=job["progress"],
        message=job["message"] or "",
        attempts=job["attempts"],
        max_attempts=job["max_attempts"],
        cancel_requested=bool(job["cancel_requested"]),
        system_id=job.get("system_id"),
        model_id=job.get("model_id"),
        params=params,
        created_at=ts(job["created_at"]),
        updated_at=ts(job["updated_at"]),
        started_at=ts(job.get("started_at")),
        finished_at=ts(job.get("finished_at")),
        result=job.get("result"),
        error=job.get("error"),
        last_error=job.get("last_error"),
        links={
            "self": base,
            "events": f"{base}/events",
            "artifacts": f"{base}/artifacts",
            "cancel": f"{base}/cancel",
        },
    )


def _wire(model: type[M], row: dict[str, Any], **values: Any) -> M:
    """``model`` from the row's columns it declares (others -- spec, path, owner -- stay
    out: the wire schemas allow extra fields), ``created_at`` as a datetime, then ``values``."""
    fields = {name: row[name] for name in model.model_fields if name in row}
    return model(**{**fields, "created_at": ts(row["created_at"]), **values})


def system_info(s: dict[str, Any]) -> SystemInfo:
    return _wire(SystemInfo, s)


def artifact_info(a: dict[str, Any]) -> ArtifactInfo:
    return _wire(ArtifactInfo, a, links=_file_links("artifacts", a["id"]))


def model_info(m: dict[str, Any]) -> ModelInfo:
    return _wire(ModelInfo, m, links=_file_links("models", m["id"]))


def key_info(k: dict[str, Any]) -> KeyInfo:
    return _wire(KeyInfo, k)
