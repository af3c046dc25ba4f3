"""Serving a stored file as a download: 410 once it left the disk, ``Range`` and ``If-Range``
as ``server.http.byte_ranges`` decides; where the files live is ``server.storage.layout``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header
from fastapi.responses import FileResponse, StreamingResponse
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.http.byte_ranges import InvalidRange, Unsatisfiable, if_range_matches, parse_range
from server.http.problems import Problem, found
from server.storage.store import Store

CHUNK = 64 * 1024


def file_responses(media_type: str = "*/*") -> dict[int | str, dict[str, Any]]:
    """The success responses of a download route, for the OpenAPI document: the whole file
    (200) or one range of it (206), served as ``media_type``."""
    binary = {media_type: {"schema": {"type": "string", "format": "binary"}}}
    return {
        200: {"description": "the file (also for several ranges at once)", "content": binary},
        206: {
            "description": "part of the file (one range: bytes=a-b, bytes=a- or bytes=-n; "
            "If-Range honoured)",
            "content": binary,
        },
    }


#: artifacts are served with the media type of their file (``server.storage.layout``)
FILE_RESPONSES = file_responses()
MODEL_MEDIA_TYPE = "application/octet-stream"  # a torch checkpoint (model.pt)

RangeHeader = Annotated[
    str | None,
    Header(
        alias="Range",
        description="bytes=a-b, bytes=a- or bytes=-n; several ranges get the whole file",
    ),
]
IfRangeHeader = Annotated[
    str | None, Header(alias="If-Range", description="ETag or Last-Modified of the file")
]


@dataclass(frozen=True)
class RangeRequest:
    """A download request's ``Range`` and ``If-Range`` headers (each None when absent)."""

    range: str | None = None
    if_range: str | None = None


def _range_request(range_header: RangeHeader = None, if_range: IfRangeHeader = None):
    return RangeRequest(range_header, if_range)


#: the Range headers of a download route, as one parameter (documented as both headers)
Ranges = Annotated[RangeRequest, Depends(_range_request)]


class _WholeFile(FileResponse):
    """The whole file, whatever ``Range`` the request carries: the range decision is made in
    ``file_response``, so Starlette's own range handling must not see the header."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope.get("headers", []) if k not in (b"range", b"if-range")]
        await super().__call__({**scope, "headers": headers}, receive, send)


async def _read(path: str, start: int, length: int):
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        while length > 0:
            chunk = await f.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def file_response(
    path: str,
    media_type: str,
    filename: str,
    range_header: str | None = None,
    if_range: str | None = None,
) -> Response:
    """The file as a download: 206 for one satisfiable range, 200 otherwise; refusals are
    problem+json like every error: 400 for a malformed ``bytes=`` range, 416 (with
    ``Content-Range: bytes */size``) when no range overlaps the file."""
    p = Path(path)
    if not p.is_file():
        raise Problem(410, "Gone", f"the file of {filename!r} is no longer on disk")
    st: os.stat_result = p.stat()
    whole = _WholeFile(path, media_type=media_type, filename=filename, stat_result=st)
    if not range_header:
        return whole
    if if_range is not None and not if_range_matches(
        if_range, whole.headers["etag"], whole.headers["last-modified"]
    ):
        return whole
    try:
        part = parse_range(range_header, st.st_size)
    except InvalidRange as exc:
        raise Problem(400, "Invalid Range", str(exc), type_="range") from None
    except Unsatisfiable:
        raise Problem(
            416,
            "Range Not Satisfiable",
            f"Range {range_header!r}: no range overlaps {filename!r} ({st.st_size} bytes)",
            type_="range",
            headers={"Content-Range": f"bytes */{st.st_size}"},
        ) from None
    if part is None:
        return whole
    headers = {
        k: whole.headers[k]
        for k in ("accept-ranges", "content-disposition", "etag", "last-modified")
    }
    headers["content-range"] = f"bytes {part.start}-{part.end}/{st.st_size}"
    headers["content-length"] = str(part.length)
    return StreamingResponse(
        _read(path, part.start, part.length), 206, headers=headers, media_type=media_type
    )


@dataclass(frozen=True)
class StoredFile:
    """A file of the caller's to download: where it is, its media type and download name."""

    path: str
    media_type: str
    name: str

    def response(self, ranges: RangeRequest) -> Response:
        return file_response(self.path, self.media_type, self.name, ranges.range, ranges.if_range)


def artifact_file(store: Store, artifact_id: str, scope: str | None) -> StoredFile:
    """The file of the caller's artifact ``artifact_id`` (404 if it has none such)."""
    a = found(store.get_artifact(artifact_id, scope), "artifact", artifact_id)
    return StoredFile(a["path"], a["media_type"], Path(a["name"]).name)


def model_file(store: Store, model_id: str, scope: str | None) -> StoredFile:
    """The file of the caller's model ``model_id`` (404 if it has none such)."""
    m = found(store.get_model(model_id, scope), "model", model_id)
    return StoredFile(m["path"], MODEL_MEDIA_TYPE, Path(m["path"]).name)
