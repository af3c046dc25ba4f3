"""Serving a stored file as a download (410 once it left the disk, ``Range`` and ``If-Range``
honoured); where the files live is ``server.storage.layout``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from server.http.problems import Problem

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


def file_response(
    path: str,
    media_type: str,
    filename: str,
    range_header: str | None = None,
    if_range: str | None = None,
) -> FileResponse:
    """The file as a download. Starlette serves ``Range`` (206) and ``If-Range``; a Range it
    would refuse is checked here first, so the refusal is problem+json like every error: 400
    for a malformed Range, 416 (with ``Content-Range: bytes */size``) for one past the end."""
    p = Path(path)
    if not p.is_file():
        raise Problem(410, "Gone", f"the file of {filename!r} is no longer on disk")
    st = p.stat()
    resp = FileResponse(path, media_type=media_type, filename=filename, stat_result=st)
    if range_header and (if_range is None or resp._should_use_range(if_range)):
        try:
            FileResponse._parse_range_header(range_header, st.st_size)
        except MalformedRangeHeader as exc:
            raise Problem(
                400, "Invalid Range", f"Range {range_header!r}: {exc.content}", type_="range"
            ) from None
        except RangeNotSatisfiable:
            raise Problem(
                416,
                "Range Not Satisfiable",
                f"Range {range_header!r} starts past the end of {filename!r} ({st.st_size} bytes)",
                type_="range",
                headers={"Content-Range": f"bytes */{st.st_size}"},
            ) from None
    return resp
