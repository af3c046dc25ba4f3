"""How many CPU cores a run uses, and how work is split over them.

``cores`` is one setting (``boltzgen run --cores``, :class:`boltzgen.pipeline.PipelineConfig`,
the ``pipeline`` job): replica-exchange worker processes, energy worker processes and torch
threads are all sized from it. Light: imports neither torch nor OpenMM (the CLI and the job
registry import it at start-up); torch is imported inside :func:`torch_threads` only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from boltzgen.errors import InputError

__all__ = ["available_cores", "contiguous_groups", "resolve_cores", "torch_threads"]


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or a job
    scheduler's share; ``os.cpu_count()`` where affinity is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_cores(cores: int | None = None) -> int:
    """The cores to use: ``cores`` (at most :func:`available_cores`: more processes than cores
    only slow each other down), or all available when None. ``cores`` < 1 or not an integer
    raises :class:`InputError`."""
    if cores is None:
        return available_cores()
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise InputError(f"cores must be an integer >= 1 (or None for all), got {cores!r}")
    return min(int(cores), available_cores())


def contiguous_groups(n_items: int, n_groups: int) -> list[list[int]]:
    """0..n_items-1 in min(n_groups, n_items) contiguous groups whose sizes differ by at most
    one, the smaller ones first (e.g. 5 replicas on 2 workers: [0, 1], [2, 3, 4]): group 0 is
    the calling process's, which has the exchanges and the frames to do besides."""
    if n_items < 1 or n_groups < 1:
        raise InputError(f"need n_items >= 1 and n_groups >= 1, got {n_items}, {n_groups}")
    n = min(int(n_groups), int(n_items))
    size, extra = divmod(int(n_items), n)
    groups, start = [], 0
    for g in range(n):
        stop = start + size + (g >= n - extra)
        groups.append(list(range(start, stop)))
        start = stop
    return groups


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block and restored after (the
    front ends call this; the library never changes torch's threads on import)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
