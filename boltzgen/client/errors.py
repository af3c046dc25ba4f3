"""The SDK's errors: ``ApiError`` (an error response, with its RFC 9457 problem document),
``RateLimitedError`` (a 429/503 the client stopped retrying) and ``JobFailedError``."""

from __future__ import annotations

from typing import Any

import httpx

from boltzgen.errors import BoltzgenError
from boltzgen.schemas import (
    JobInfo,
)


class ApiError(BoltzgenError):
    """An error response. ``status`` is the HTTP status, ``problem`` the problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        title = problem.get("title", "error")
        detail = problem.get("detail")
        super().__init__(f"HTTP {status} {title}" + (f": {detail}" if detail else ""))


class RateLimitedError(ApiError):
    """A 429 (or 503) that the client stopped retrying: waiting as the server asks
    (``retry_after`` s more) would pass ``max_wait`` in all, or ``max_retries`` was used up.
    ``waited`` is how long this request already waited."""

    def __init__(
        self, status: int, problem: dict[str, Any], *, waited: float, retry_after: float
    ) -> None:
        super().__init__(status, problem)
        self.waited = waited
        self.retry_after = retry_after
        self.args = (
            f"{self.args[0]} (gave up after waiting {waited:.1f} s; the server asks for "
            f"{retry_after:.0f} s more; raise max_wait/max_retries to wait longer)",
        )


class JobFailedError(BoltzgenError):
    """``wait`` saw the job end as failed or cancelled. ``job`` is the final JobInfo."""

    def __init__(self, job: JobInfo) -> None:
        self.job = job
        err = job.error or {}
        super().__init__(
            f"job {job.id} ({job.kind}) {job.status}"
            + (f": {err.get('type')}: {err.get('message')}" if err else "")
        )


def problem_body(resp: httpx.Response) -> dict[str, Any]:
    try:
        problem = resp.json()
        if not isinstance(problem, dict):
            problem = {"title": str(problem)}
    except ValueError:
        problem = {"title": resp.reason_phrase, "detail": resp.text[:500]}
    return problem


def raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    raise ApiError(resp.status_code, problem_body(resp))
