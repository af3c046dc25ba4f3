"""The retry policy of one request: 429/503 after the server's ``Retry-After``, connection
errors with exponential backoff; at most ``max_retries`` retries and ``max_wait`` s of waiting,
each wait logged on the ``boltzgen.client`` logger."""

from __future__ import annotations

import logging

import httpx

from boltzgen.client.errors import RateLimitedError, problem_body, raise_for

RETRY_STATUSES = (429, 503)
DEFAULT_MAX_WAIT = 30.0  # seconds a request may spend waiting on retries, in all
log = logging.getLogger("boltzgen.client")


def retry_after(resp: httpx.Response | None, attempt: int) -> float:
    if resp is not None:
        value = resp.headers.get("retry-after")
        if value:
            try:
                return min(max(float(value), 0.0), 60.0)
            except ValueError:
                pass
    return min(0.25 * 2**attempt, 10.0)


TRANSIENT = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def next_delay(attempt: int, max_retries: int, resp: httpx.Response | None) -> float | None:
    """Seconds to wait before retry ``attempt + 1``, or None to stop. ``resp`` None means a
    connection error (always retried); a response is retried only on 429/503."""
    if attempt >= max_retries:
        return None
    if resp is None:
        return retry_after(None, attempt)
    return retry_after(resp, attempt) if resp.status_code in RETRY_STATUSES else None


class Retry:
    """The retry policy of one request: 429/503 after ``Retry-After``, connection errors with
    exponential backoff; at most ``max_retries`` retries and ``max_wait`` s of waiting."""

    def __init__(self, max_retries: int, max_wait: float, method: str, path: str) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.what = f"{method} {path}"
        self.attempt = 0
        self.waited = 0.0

    def _allowed(self, delay: float) -> bool:
        return self.attempt < self.max_retries and self.waited + delay <= self.max_wait

    def _take(self, delay: float, why: str, level: int = logging.WARNING) -> float:
        log.log(
            level,
            "%s: %s; retrying in %.1f s (waited %.1f s, max_wait %.0f s)",
            self.what,
            why,
            delay,
            self.waited,
            self.max_wait,
        )
        self.attempt += 1
        self.waited += delay
        return delay

    def after_error(self, exc: Exception) -> float:
        """Seconds to wait after a connection error; re-raises it when out of budget."""
        delay = retry_after(None, self.attempt)
        if not self._allowed(delay):
            raise exc
        return self._take(delay, f"{type(exc).__name__}: {exc}", logging.INFO)

    def after_response(self, resp: httpx.Response) -> float | None:
        """Seconds to wait before retrying ``resp``; None: it is the answer (raises
        ``ApiError`` for other 4xx/5xx, ``RateLimitedError`` for a 429/503 out of budget)."""
        if resp.status_code not in RETRY_STATUSES:
            raise_for(resp)
            return None
        delay = retry_after(resp, self.attempt)
        if not self._allowed(delay):
            raise RateLimitedError(
                resp.status_code, problem_body(resp), waited=self.waited, retry_after=delay
            )
        return self._take(delay, f"HTTP {resp.status_code}")
