"""JSON-able copies of results: one converter for summaries, job results and file metadata."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["json_clean"]


def json_clean(obj: Any, *, finite_only: bool = True) -> Any:
    """A copy of ``obj`` that ``json.dumps`` writes as standard JSON: dicts (keys as str),
    lists and tuples recursively, numpy arrays and scalars as Python values, and non-finite
    floats as ``None`` (with ``finite_only=False`` they stay floats, which Python's json
    module writes as the non-standard NaN / Infinity and reads back)."""
    if isinstance(obj, dict):
        return {str(k): json_clean(v, finite_only=finite_only) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_clean(v, finite_only=finite_only) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist(), finite_only=finite_only)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if finite_only and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
