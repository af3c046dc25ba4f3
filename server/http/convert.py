"""Store rows (dicts) -> wire schemas (``boltzgen.schemas``): timestamps become datetimes,
server-side fields (system spec, file paths, owner, lease) stay out, links are added."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from boltzgen.schemas import ArtifactInfo, JobInfo, KeyInfo, ModelInfo, SystemInfo


def ts(x: float | None) -> datetime | None:
    return None if x is None else datetime.fromtimestamp(x, UTC)


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


def system_info(s: dict[str, Any]) -> SystemInfo:
    return SystemInfo(
        id=s["id"],
        name=s["name"],
        n_atoms=s["n_atoms"],
        solvent=s["solvent"],
        temperature=s["temperature"],
        forcefield=list(s["forcefield"]),
        created_at=ts(s["created_at"]),
    )


def artifact_info(a: dict[str, Any]) -> ArtifactInfo:
    return ArtifactInfo(
        id=a["id"],
        job_id=a["job_id"],
        name=a["name"],
        size=a["size"],
        media_type=a["media_type"],
        created_at=ts(a["created_at"]),
        links={"self": f"/v1/artifacts/{a['id']}", "content": f"/v1/artifacts/{a['id']}/content"},
    )


def model_info(m: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        id=m["id"],
        name=m["name"],
        system_id=m["system_id"],
        job_id=m["job_id"],
        size=m["size"],
        summary=m["summary"],
        created_at=ts(m["created_at"]),
        links={"self": f"/v1/models/{m['id']}", "content": f"/v1/models/{m['id']}/content"},
    )


def key_info(k: dict[str, Any]) -> KeyInfo:
    return KeyInfo(**{**k, "created_at": ts(k["created_at"])})
