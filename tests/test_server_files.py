"""Range / If-Range parsing of the download routes (server.api.files), against RFC 9110's
examples; the routes' answers are tested end to end in test_server_api."""

from __future__ import annotations

import pytest

from server.api.files import if_range_matches, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-499", 10_000, [(0, 499)]),
        ("bytes=500-999", 10_000, [(500, 999)]),
        ("bytes=-500", 10_000, [(9500, 9999)]),
        ("bytes=9500-", 10_000, [(9500, 9999)]),
        ("bytes=0-0,-1", 10_000, [(0, 0), (9999, 9999)]),
        ("bytes= 2-4 , 6-", 10, [(2, 4), (6, 9)]),
        ("bytes=5-100", 10, [(5, 9)]),  # clipped to the file
        ("bytes=-100", 10, [(0, 9)]),  # a suffix longer than the file: all of it
        ("BYTES=1-2", 10, [(1, 2)]),
        ("bytes=12-20,3-4", 10, [(3, 4)]),  # one range past the end, one inside
    ],
)
def test_ranges_parse(header: str, size: int, expected: list[tuple[int, int]]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header", ["pages=1-2", "bytes=", "bytes=a-b", "bytes=4-2", "bytes=1-2-3", "bytes=-", "bytes=1"]
)
def test_malformed_ranges_are_value_errors(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 10)


@pytest.mark.parametrize("header", ["bytes=10-20", "bytes=10-", "bytes=-0"])
def test_ranges_past_the_end_are_unsatisfiable(header: str) -> None:
    with pytest.raises(IndexError):
        parse_range(header, 10)


def test_if_range_matches_the_etag_or_date_exactly() -> None:
    headers = {"etag": '"abc"', "last-modified": "Fri, 04 Dec 2026 10:00:00 GMT"}
    assert if_range_matches('"abc"', headers)
    assert if_range_matches("Fri, 04 Dec 2026 10:00:00 GMT", headers)
    assert not if_range_matches('"stale"', headers)
    assert not if_range_matches('W/"abc"', headers)
