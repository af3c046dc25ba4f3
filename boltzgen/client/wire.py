"""What both clients send and read, written once: the endpoint and headers, request bodies (a
PDB path or text), list parameters, and server-sent events."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def looks_like_path(text: str) -> bool:
    seps = [s for s in (os.sep, os.altsep, "/") if s]
    return text.lower().endswith((".pdb", ".ent")) or any(s in text for s in seps)


def pdb_text(pdb: str | os.PathLike[str]) -> str:
    """The PDB text to upload: a path (``os.PathLike``, or a one-line string naming a file) is
    read; only multi-line text is PDB content. A string that looks like a path (ends in .pdb
    or has a path separator) but names no file raises FileNotFoundError, instead of being
    sent as PDB text."""
    if isinstance(pdb, os.PathLike):
        return Path(pdb).read_text()
    text = str(pdb)
    if "\n" in text.strip():
        return text
    name = text.strip()
    if name and Path(name).is_file():
        return Path(name).read_text()
    if looks_like_path(name):
        raise FileNotFoundError(errno.ENOENT, "no such PDB file", name)
    raise ValueError(
        f"{name[:80]!r} is neither an existing file nor PDB text (PDB text has several lines)"
    )


def list_params(status, kind, cursor, limit) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if kind:
        params["kind"] = kind
    if cursor:
        params["cursor"] = cursor
    return params


def system_body(
    pdb: str | os.PathLike[str],
    name: str | None,
    forcefield: tuple[str, ...] | list[str],
    solvent: str,
    temperature: float,
    constraints: str | None,
) -> dict[str, Any]:
    return {
        "pdb": pdb_text(pdb),
        "name": name,
        "forcefield": list(forcefield),
        "solvent": solvent,
        "temperature": temperature,
        "constraints": constraints,
    }


def job_body(kind, system_id, model_id, params, max_attempts) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "params": dict(params or {})}
    if system_id:
        body["system_id"] = system_id
    if model_id:
        body["model_id"] = model_id
    if max_attempts:
        body["max_attempts"] = max_attempts
    return body


def auth_headers(api_key: str | None) -> dict[str, str]:
    h = {"User-Agent": "boltzgen-client"}
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from text lines: dicts with ``id``, ``event``, ``data`` (parsed)."""
    event: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                raw = "\n".join(data)
                try:
                    event["data"] = json.loads(raw)
                except ValueError:
                    event["data"] = raw
                event.setdefault("event", "message")
                yield event
            event, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field in ("id", "event"):
                event[field] = value


def endpoint(base_url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """(base URL without a trailing slash, API key): arguments, else $BOLTZGEN_URL and
    $BOLTZGEN_API_KEY, else the local default URL and no key."""
    url = (base_url or os.environ.get("BOLTZGEN_URL") or DEFAULT_URL).rstrip("/")
    return url, api_key or os.environ.get("BOLTZGEN_API_KEY")
