"""``Range`` / ``If-Range`` parsing (``server.http.byte_ranges``): single, open and suffix
ranges, several ranges (whole file), unsatisfiable and malformed ones, other units, If-Range."""

from __future__ import annotations

import pytest

from server.http.byte_ranges import (
    ByteRange,
    InvalidRange,
    Unsatisfiable,
    if_range_matches,
    parse_range,
)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=2-4", 2, 4),
        ("bytes=0-0", 0, 0),
        ("bytes=7-", 7, 9),
        ("bytes=5-99", 5, 9),  # clipped to the file
        ("bytes=-3", 7, 9),  # the last 3 bytes
        ("bytes=-50", 0, 9),  # a suffix longer than the file: all of it
        ("BYTES = 1-2", 1, 2),  # the unit is case-insensitive
        ("bytes=3-4,", 3, 4),  # empty list elements are allowed
    ],
)
def test_one_range(header, start, end):
    part = parse_range(header, 10)
    assert part == ByteRange(start, end) and part.length == end - start + 1


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "bytes=0-1, 20-30", "bytes=-2,0-0"])
def test_several_ranges_get_the_whole_file(header):
    assert parse_range(header, 10) is None


@pytest.mark.parametrize("header", ["bytes=10-20", "bytes=10-", "bytes=-0", "bytes=10-11,12-"])
def test_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 10)


def test_an_empty_file_satisfies_no_range():
    for header in ("bytes=0-0", "bytes=-5"):
        with pytest.raises(Unsatisfiable):
            parse_range(header, 0)


@pytest.mark.parametrize(
    "header", ["bytes", "bytes=", "bytes=4-2", "bytes=a-b", "bytes=1", "bytes=--1", "bytes=١-٢"]
)
def test_malformed(header):
    with pytest.raises(InvalidRange):
        parse_range(header, 10)


def test_other_units_are_ignored():
    assert parse_range("pages=1-2", 10) is None


def test_if_range():
    etag, date = '"abc"', "Wed, 21 Oct 2015 07:28:00 GMT"
    assert if_range_matches('"abc"', etag, date)
    assert not if_range_matches('"stale"', etag, date)
    assert not if_range_matches('W/"abc"', etag, date)  # weak tags never match
    assert if_range_matches(date, etag, date)
    assert not if_range_matches("Thu, 22 Oct 2015 07:28:00 GMT", etag, date)
