"""Worker processes that answer requests over a pipe: the loop on the worker's side and the
shutdown on the caller's, shared by the energy workers (:mod:`boltzgen.energy`) and the
replica-exchange workers (:mod:`boltzgen.replica_pool`). Light: standard library only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["requests", "stop_workers"]


def requests(conn: Any) -> Iterator[Any]:
    """The messages arriving on ``conn`` (a worker's end of a Pipe) until ``None`` or the
    pipe closes (the caller has gone)."""
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        yield msg


def stop_workers(workers: list[tuple[Any, Any]], grace: float = 0.5) -> None:
    """End worker processes given as (process, connection): ask each to stop (``None``), wait
    ``grace`` seconds, kill what is still alive, close the pipes."""
    for proc, conn in workers:
        with contextlib.suppress(Exception):
            if proc.is_alive():
                conn.send(None)
    for proc, conn in workers:
        proc.join(timeout=grace)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2.0)
        conn.close()
