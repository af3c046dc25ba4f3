"""Artifacts: the files a job wrote (``/v1/jobs/{id}/artifacts``, ``/v1/artifacts/{id}``,
downloads with ``Range``). Registered by the worker when a job succeeds."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from boltzgen.schemas import ArtifactInfo, ArtifactList
from server.http.convert import artifact_info
from server.http.deps import StoreDep, Who
from server.http.files import FILE_RESPONSES, Ranges, artifact_file
from server.http.problems import found, problem_responses
from server.http.routes import V1

router = APIRouter(prefix=V1, tags=["artifacts"])


@router.get(
    "/jobs/{job_id}/artifacts", response_model=ArtifactList, responses=problem_responses(404)
)
def list_artifacts(job_id: str, store: StoreDep, who: Who) -> ArtifactList:
    found(store.get_job(job_id, who.scope), "job", job_id)
    return ArtifactList(items=[artifact_info(a) for a in store.list_artifacts(job_id, who.scope)])


@router.get(
    "/artifacts/{artifact_id}", response_model=ArtifactInfo, responses=problem_responses(404)
)
def get_artifact(artifact_id: str, store: StoreDep, who: Who) -> ArtifactInfo:
    return artifact_info(found(store.get_artifact(artifact_id, who.scope), "artifact", artifact_id))


@router.get(
    "/artifacts/{artifact_id}/content",
    response_class=FileResponse,
    responses={**FILE_RESPONSES, **problem_responses(404, 410, 416)},
)
def download_artifact(
    artifact_id: str,
    store: StoreDep,
    who: Who,
    ranges: Ranges,
) -> Response:
    """The file; honours ``Range: bytes=a-b`` (206) and ``If-Range``."""
    return artifact_file(store, artifact_id, who.scope).response(ranges)
