"""``/v1/kinds``: the registered job kinds (``boltzgen.jobs`` and plugins), so clients can
discover parameters instead of hard-coding them."""

from __future__ import annotations

from fastapi import APIRouter

from boltzgen.jobs import job_kinds
from boltzgen.schemas import KindInfo
from server.http.deps import Who
from server.http.problems import problem_responses
from server.http.routes import V1

router = APIRouter(prefix=V1, tags=["kinds"])


@router.get("/kinds", response_model=list[KindInfo], responses=problem_responses())
def list_kinds(who: Who) -> list[KindInfo]:
    """Registered job kinds with the JSON schema of the parameters a client sends."""
    return [
        KindInfo(
            name=k.name,
            description=k.description,
            gpu=k.gpu,
            needs_system=k.needs_system,
            needs_model=k.needs_model,
            params_schema=k.client_schema(),
        )
        for k in job_kinds().values()
    ]
