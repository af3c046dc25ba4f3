"""``Range`` and ``If-Range`` (RFC 9110 sections 14.2 and 13.1.5), parsed here rather than by
Starlette's private helpers, so the service decides what a download answers:

- one satisfiable range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``): 206 with that part;
- several ranges, at least one satisfiable: the whole file (200). RFC 9110 lets a server ignore
  ``Range``; the service does not send ``multipart/byteranges``, which no client of it reads;
- no satisfiable range: 416 with ``Content-Range: bytes */size``;
- a range unit other than ``bytes``: ignored (200), as RFC 9110 14.2 requires;
- a malformed ``bytes=`` specifier: 400 (a client bug is named rather than hidden).
"""

from __future__ import annotations

from dataclasses import dataclass


class InvalidRange(ValueError):
    """A ``bytes=`` specifier that does not parse."""


class Unsatisfiable(ValueError):
    """No range of the header overlaps the file."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive, as in ``Content-Range: bytes start-end/size``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _digits(text: str, header: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise InvalidRange(f"{text!r} is not a byte position in {header!r}")
    return int(text)


def _spec(spec: str, size: int, header: str) -> ByteRange | None:
    """One range-spec against a file of ``size`` bytes; None when it is unsatisfiable."""
    first, dash, last = spec.partition("-")
    if not dash:
        raise InvalidRange(f"{spec!r} has no '-' in {header!r}")
    if not first:  # suffix-range: the last n bytes
        n = _digits(last, header)
        return ByteRange(max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    start = _digits(first, header)
    end = _digits(last, header) if last else size - 1
    if last and end < start:
        raise InvalidRange(f"{spec!r} ends before it starts in {header!r}")
    return ByteRange(start, min(end, size - 1)) if start < size else None


def parse_range(header: str, size: int) -> ByteRange | None:
    """The part of a ``size``-byte file that ``Range: header`` asks for; None: send it whole
    (another unit, or several ranges). Raises ``InvalidRange`` or ``Unsatisfiable``."""
    unit, eq, specs = header.partition("=")
    if not eq:
        raise InvalidRange(f"{header!r} is not unit=ranges")
    if unit.strip().lower() != "bytes":
        return None
    parts = [s.strip() for s in specs.split(",")]
    parts = [s for s in parts if s]  # RFC 9110 list syntax allows empty elements
    if not parts:
        raise InvalidRange(f"{header!r} names no range")
    ranges = [_spec(s, size, header) for s in parts]
    satisfiable = [r for r in ranges if r is not None]
    if not satisfiable:
        raise Unsatisfiable(header)
    return satisfiable[0] if len(parts) == 1 else None


def if_range_matches(if_range: str, etag: str, last_modified: str) -> bool:
    """Whether ``If-Range`` still names this file: a strong ETag compared strongly (a weak
    ``W/`` tag never matches), or an HTTP date equal to ``Last-Modified``."""
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return not value.startswith("W/") and value == etag
    return value == last_modified
