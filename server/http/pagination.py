"""Cursor pagination: opaque cursors over a table's ``seq`` (keyset, newest first), and the
``limit`` query parameter. Opaque so clients cannot depend on what a cursor holds."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, Query

from server.http.deps import SettingsDep
from server.http.problems import Problem

# capped again by settings.page_size_max in each route
Limit = Annotated[int, Query(ge=1, le=1000)]
# what encode_cursor writes: unpadded base64url
Cursor = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z0-9_-]+$", max_length=64, description="next_cursor of the last page"),
]


def encode_cursor(seq: int | None) -> str | None:
    return (
        None if seq is None else base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")
    )


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(
            422, "Invalid cursor", f"cursor {cursor!r} is not one this API issued", type_="cursor"
        ) from None


@dataclass(frozen=True)
class PageRequest:
    """A list request's ``cursor`` and ``limit``, the limit capped at this server's
    ``page_size_max``."""

    cursor: str | None
    limit: int


def _page_request(settings: SettingsDep, cursor: Cursor = None, limit: Limit = 50) -> PageRequest:
    return PageRequest(cursor, min(limit, settings.page_size_max))


#: the paging query of a list route (``cursor``, ``limit``), as one parameter
Paging = Annotated[PageRequest, Depends(_page_request)]


class Page(NamedTuple):
    items: list[Any]
    next_cursor: str | None
    limit: int  # as capped


def read_page(
    list_rows: Callable[[str | None, int | None, int], tuple[list[dict[str, Any]], int | None]],
    scope: str | None,
    paging: PageRequest,
    convert: Callable[[dict[str, Any]], Any],
) -> Page:
    """One page of the caller's rows from ``list_rows(scope, seq cursor, limit)`` (a Store
    list method), each through ``convert``."""
    items, nxt = list_rows(scope, decode_cursor(paging.cursor), paging.limit)
    return Page([convert(row) for row in items], encode_cursor(nxt), paging.limit)
