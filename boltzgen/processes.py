"""Worker processes. Those that answer requests over a pipe: the loop on the worker's side and
the shutdown on the caller's, shared by the energy workers (:mod:`boltzgen.energy`) and the
replica-exchange workers (:mod:`boltzgen.replica_pool`). Those that make one call and send its
result (:func:`spawn_call`): flows trained side by side (the pipeline's and the demo's).
Light: standard library only."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["call_result", "kill_workers", "requests", "spawn_call", "stop_workers"]


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


def spawn_call(fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    """``fn(*args)`` in a spawned process (fork would copy OpenMM's and torch's threads);
    returns (process, the end its result arrives on) for :func:`call_result`. ``fn`` and
    ``args`` must pickle (a module-level function)."""
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_call_main, args=(theirs, fn, args), daemon=True)
    proc.start()
    theirs.close()
    return proc, mine


def _call_main(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    """The spawned side: send ("ok", result) or ("error", text)."""
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # reported to the caller
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def call_result(proc: Any, conn: Any, join: float = 10.0) -> tuple[str, Any]:
    """("ok", result) or ("error", text) of a :func:`spawn_call`; blocks until it is done."""
    try:
        status, value = conn.recv()
    except (EOFError, OSError):  # died without a word (killed, out of memory)
        proc.join(timeout=join)
        return "error", f"the worker exited with code {proc.exitcode}"
    proc.join(timeout=join)
    return status, value


def kill_workers(workers: list[tuple[Any, Any]]) -> None:
    """Kill worker processes given as (process, connection) that are still running and close
    the pipes: for workers that do not listen (a call in progress), where
    :func:`stop_workers` would only wait."""
    for proc, conn in workers:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5.0)
        conn.close()
