"""Accept-Encoding and If-None-Match, as the API reads them for stored answers."""

from __future__ import annotations

import pytest

from model_proxy.broker.negotiation import accepts_gzip, etag_matches, negotiate


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br, zstd", True),  # what browsers send
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*", True),
        ("*;q=0", False),
        ("*, gzip;q=0", False),  # named beats the wildcard
        ("gzip;q=0, *", False),
        ("gzip;q=0.5, *;q=0", True),
        ("gzip;q=nonsense", False),
        ("gzip;q=2", False),
        ("gzip;level=9", True),  # other parameters do not matter
    ],
)
def test_gzip_is_sent_only_where_accept_encoding_allows_it(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ('"abc"', True),
        ('W/"abc"', True),  # If-None-Match compares weakly
        ('"x", "abc"', True),
        (' "x" ,W/"abc" ', True),
        ('"abc-gzip"', False),
        ('"ab"', False),
        ("abc", False),  # not quoted: not an entity tag
        ("*", True),
        ('"x", ', False),
    ],
)
def test_if_none_match_names_the_etag_or_is_a_star(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


def test_headers_are_read_as_starlette_gives_them() -> None:
    wanted = negotiate({"accept-encoding": "gzip", "if-none-match": '"t"'})
    assert wanted.gzip and wanted.if_none_match == '"t"'
    assert not negotiate({}).gzip
