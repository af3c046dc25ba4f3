"""Files under ``state_dir``: where job directories and model files live, the media types
artifacts are served with, and serving a stored file (410 once it left the disk).

One place for the layout, because the worker writes it and the routes read and delete it.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import FileResponse

from server.api.problems import Problem
from server.settings import Settings

MEDIA_TYPES = {
    ".h5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
    ".npz": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".pt": "application/octet-stream",
    ".pdb": "chemical/x-pdb",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".csv": "text/csv",
    ".txt": "text/plain",
}


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def job_root(settings: Settings, job_id: str) -> Path:
    """``jobs/<job id>/``: ``checkpoint/`` (kept across attempts) and ``attempt-<n>/``."""
    return Path(settings.state_dir) / "jobs" / job_id


def model_dir(settings: Settings, job_id: str) -> Path:
    """``models/<job id>/``: a registered model's file, copied out of its job directory so
    deleting the job keeps the model."""
    return Path(settings.state_dir) / "models" / job_id


_BINARY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
#: The success responses of a download route, for the OpenAPI document.
FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the file", "content": _BINARY},
    206: {
        "description": "part of the file (Range: bytes=a-b; If-Range honoured)",
        "content": _BINARY,
    },
}

RangeHeader = Annotated[
    str | None, Header(alias="Range", description="bytes=a-b (one or more ranges)")
]
IfRangeHeader = Annotated[
    str | None, Header(alias="If-Range", description="ETag or Last-Modified of the file")
]


def parse_range(header: str, size: int) -> list[tuple[int, int]]:
    """Byte ranges of a ``Range`` header (RFC 9110 14.1.2) as inclusive (first, last) pairs
    clipped to a file of ``size`` bytes: ``bytes=a-b``, ``bytes=a-`` (to the end), ``bytes=-n``
    (the last n bytes), several separated by commas (the server answers those as Starlette
    does, multipart/byteranges). Raises ``ValueError`` for a malformed header and
    ``IndexError`` when no range overlaps the file (416)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        raise ValueError("only 'bytes=' ranges are served")
    out: list[tuple[int, int]] = []
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not dash or not (first.isdigit() or (not first and last.isdigit())):
            raise ValueError(f"{part.strip()!r} is not a byte range")
        if last and not last.isdigit():
            raise ValueError(f"{part.strip()!r} is not a byte range")
        if not first:  # suffix: the last n bytes
            n = int(last)
            if n == 0:
                continue
            out.append((max(0, size - n), size - 1))
            continue
        a = int(first)
        b = int(last) if last else max(a, size - 1)
        if b < a:
            raise ValueError(f"{part.strip()!r} ends before it starts")
        if a < size:
            out.append((a, min(b, size - 1)))
    if not out:
        raise IndexError("no range overlaps the file")
    return out


def if_range_matches(if_range: str, headers: Any) -> bool:
    """Whether ``If-Range`` names the file as served (its ETag or Last-Modified exactly, as
    RFC 9110 13.1.5 asks): if not, the whole file is sent and the Range ignored."""
    return if_range in (headers.get("etag"), headers.get("last-modified"))


def file_response(
    path: str,
    media_type: str,
    filename: str,
    range_header: str | None = None,
    if_range: str | None = None,
) -> FileResponse:
    """The file as a download. Starlette serves ``Range`` (206) and ``If-Range``; the Range is
    checked here first, so a refusal is problem+json like every error: 400 for a malformed
    Range, 416 (with ``Content-Range: bytes */size``) for one past the end."""
    p = Path(path)
    if not p.is_file():
        raise Problem(410, "Gone", f"the file of {filename!r} is no longer on disk")
    st = p.stat()
    resp = FileResponse(path, media_type=media_type, filename=filename, stat_result=st)
    if range_header and (if_range is None or if_range_matches(if_range, resp.headers)):
        try:
            parse_range(range_header, st.st_size)
        except ValueError as exc:
            raise Problem(
                400, "Invalid Range", f"Range {range_header!r}: {exc}", type_="range"
            ) from None
        except IndexError:
            raise Problem(
                416,
                "Range Not Satisfiable",
                f"Range {range_header!r} starts past the end of {filename!r} ({st.st_size} bytes)",
                type_="range",
                headers={"Content-Range": f"bytes */{st.st_size}"},
            ) from None
    return resp
