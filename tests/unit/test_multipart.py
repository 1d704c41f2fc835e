"""The multipart/related reader on canned bodies, split at every possible chunk boundary."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from model_proxy.shared.dicomweb.multipart import (
    MAX_HEADER_BYTES,
    MultipartError,
    MultipartReader,
    PartTooLarge,
    boundary_from_content_type,
    dicom_body_chunks,
    iter_parts,
)

BOUNDARY = b"7d1c2f0a-5b3e-4e8c-9a41-0f6d2b8e3c55"
DICOM_HEADERS = b"Content-Type: application/dicom"


# --- the boundary from the Content-Type header ------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc123', b"abc123"),
        ('multipart/related; type="application/dicom"; boundary="abc123"', b"abc123"),
        ('multipart/related; boundary="a b:c,d"; type="application/dicom"', b"a b:c,d"),
        ("multipart/related;boundary=abc;type=application/dicom", b"abc"),
        ("multipart/related; boundary = abc", b"abc"),
        ("Multipart/Related; BOUNDARY=AbC", b"AbC"),
        ("  multipart/related; boundary=x", b"x"),
    ],
)
def test_boundary_from_content_type(content_type: str, boundary: bytes) -> None:
    assert boundary_from_content_type(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("application/json", "expected a multipart response, got 'application/json'"),
        ("", "expected a multipart response, got 'none'"),
        ('multipart/related; type="application/dicom"', "multipart response without a boundary"),
    ],
)
def test_content_type_errors(content_type: str, message: str) -> None:
    with pytest.raises(MultipartError) as caught:
        boundary_from_content_type(content_type)
    assert str(caught.value) == message


# --- canned bodies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canned:
    body: bytes
    parts: list[bytes]


def multipart(
    parts: list[tuple[bytes | None, bytes]],
    *,
    preamble: bytes = b"",
    padding: bytes = b"",
    closing: bytes | None = b"--",
    epilogue: bytes = b"",
) -> bytes:
    """A multipart body; ``headers`` None gives a part without headers."""
    out = preamble + (b"\r\n" if preamble else b"")
    for headers, content in parts:
        out += b"--" + BOUNDARY + padding + b"\r\n"
        out += (headers + b"\r\n" if headers is not None else b"") + b"\r\n"
        out += content + b"\r\n"
    if closing is not None:
        out += b"--" + BOUNDARY + closing + padding + b"\r\n" + epilogue
    return out


BINARY = bytes(range(256)) * 4 + b"\r\n\r\n--\r\n-" + bytes(range(256))
NOT_DELIMITERS = (
    b"text --" + BOUNDARY + b" in the middle of a line\r\n"
    b"\n--" + BOUNDARY + b" after a bare LF\r\n"
    b"\r\n--" + BOUNDARY[:-1] + b"X a boundary with its last character changed\r\n"
    b"\r\n-" + BOUNDARY + b" one dash only\r\n"
    b"\r--" + BOUNDARY + b" after a bare CR"
)

CANNED = {
    "two parts": Canned(
        multipart([(DICOM_HEADERS, b"instance1"), (DICOM_HEADERS, b"instance2")]),
        [b"instance1", b"instance2"],
    ),
    "one part": Canned(multipart([(DICOM_HEADERS, b"only")]), [b"only"]),
    "preamble and epilogue": Canned(
        multipart(
            [(DICOM_HEADERS, b"a"), (DICOM_HEADERS, b"b")],
            preamble=b"This is a multi-part message in MIME format.",
            epilogue=b"epilogue --" + BOUNDARY + b"\r\nignored",
        ),
        [b"a", b"b"],
    ),
    "transport padding": Canned(
        multipart([(DICOM_HEADERS, b"a"), (DICOM_HEADERS, b"b")], padding=b" \t  "),
        [b"a", b"b"],
    ),
    "no closing delimiter (Orthanc closes the connection)": Canned(
        multipart([(DICOM_HEADERS, b"first"), (DICOM_HEADERS, b"last")], closing=None),
        [b"first", b"last"],
    ),
    "no closing delimiter, no final CRLF": Canned(
        multipart([(DICOM_HEADERS, b"first"), (DICOM_HEADERS, b"last")], closing=None)[:-2],
        [b"first", b"last"],
    ),
    "parts without headers": Canned(
        multipart([(None, b"bare1"), (None, b"bare2")]), [b"bare1", b"bare2"]
    ),
    "with and without headers": Canned(
        multipart([(None, b"bare"), (DICOM_HEADERS, b"dressed"), (None, b"bare again")]),
        [b"bare", b"dressed", b"bare again"],
    ),
    "boundary-like text that is not a delimiter": Canned(
        multipart([(DICOM_HEADERS, NOT_DELIMITERS), (DICOM_HEADERS, b"next")]),
        [NOT_DELIMITERS, b"next"],
    ),
    "binary content with CRLFs and dashes": Canned(
        multipart([(DICOM_HEADERS, BINARY), (DICOM_HEADERS, BINARY[::-1])]),
        [BINARY, BINARY[::-1]],
    ),
    "an empty part": Canned(multipart([(DICOM_HEADERS, b""), (DICOM_HEADERS, b"x")]), [b"", b"x"]),
    "empty body": Canned(b"", []),
    "closing delimiter only": Canned(b"--" + BOUNDARY + b"--\r\n", []),
}


def read_all(chunks: list[bytes]) -> list[bytes]:
    return list(iter_parts(chunks, BOUNDARY))


@pytest.fixture(params=CANNED.values(), ids=CANNED.keys())
def canned(request: pytest.FixtureRequest) -> Canned:
    return request.param


def test_in_one_chunk(canned: Canned) -> None:
    assert read_all([canned.body]) == canned.parts


def test_split_in_two_at_every_position(canned: Canned) -> None:
    for at in range(len(canned.body) + 1):
        chunks = [canned.body[:at], canned.body[at:]]
        assert read_all(chunks) == canned.parts, f"split at {at}"


def test_one_byte_at_a_time(canned: Canned) -> None:
    chunks = [canned.body[i : i + 1] for i in range(len(canned.body))]
    assert read_all(chunks) == canned.parts


def test_random_chunk_sizes(canned: Canned) -> None:
    rng = random.Random(len(canned.body))
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(canned.body) + 1), min(5, len(canned.body) + 1)))
        chunks = [
            canned.body[a:b] for a, b in zip([0, *cuts], [*cuts, len(canned.body)], strict=True)
        ]
        assert read_all(chunks) == canned.parts, f"cuts {cuts}"


def test_quoted_and_unquoted_boundary_read_the_same_body() -> None:
    body = CANNED["two parts"].body
    for content_type in (
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY.decode()}',
        f'multipart/related; type="application/dicom"; boundary="{BOUNDARY.decode()}"',
    ):
        boundary = boundary_from_content_type(content_type)
        assert list(iter_parts([body], boundary)) == [b"instance1", b"instance2"]


# --- streaming behaviour ------------------------------------------------------------------------


def test_a_part_is_handed_back_as_soon_as_its_delimiter_arrives() -> None:
    body = CANNED["two parts"].body
    first_end = body.index(b"\r\n--" + BOUNDARY, body.index(b"instance1"))
    reader = MultipartReader(BOUNDARY)
    assert reader.feed(body[:first_end]) == []
    assert reader.feed(body[first_end : first_end + 2 + 2 + len(BOUNDARY)]) == [b"instance1"]
    assert reader.feed(body[first_end + 2 + 2 + len(BOUNDARY) :]) == [b"instance2"]
    assert reader.done


def test_nothing_is_read_after_the_closing_delimiter() -> None:
    def chunks() -> Iterator[bytes]:
        yield CANNED["two parts"].body
        raise AssertionError("read past the closing delimiter")

    assert list(iter_parts(chunks(), BOUNDARY)) == [b"instance1", b"instance2"]


def test_feed_after_done_returns_nothing() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.feed(CANNED["one part"].body)
    assert reader.done
    assert reader.feed(multipart([(DICOM_HEADERS, b"more")])) == []
    assert reader.close() == []


def test_a_response_that_ends_inside_a_parts_headers_is_an_error() -> None:
    """Cut short: a silently dropped part would be an instance missing from the model's input."""
    body = b"--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n"
    with pytest.raises(MultipartError, match="inside a part's headers"):
        read_all([body])


def _declared(size: int) -> bytes:
    return b"Content-Type: application/dicom\r\nContent-Length: " + str(size).encode()


def test_a_last_part_shorter_than_its_content_length_is_an_error() -> None:
    """A PACS that closes the connection mid-part (Orthanc declares each part's length)."""
    body = multipart([(_declared(9), b"complete!"), (_declared(1000), b"cut")], closing=None)
    with pytest.raises(MultipartError, match="3 of its 1000 bytes arrived"):
        read_all([body])


@pytest.mark.parametrize("tail", [b"", b"\r\n"])
def test_a_last_part_of_its_declared_length_needs_no_closing_delimiter(tail: bytes) -> None:
    body = multipart([(_declared(9), b"complete!")], closing=None)
    assert body.endswith(b"complete!\r\n")
    assert read_all([body[:-2] + tail]) == [b"complete!"]


# --- bodies that are not multipart ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": "not found"}',
        b"<html><body>502 Bad Gateway</body></html>",
        b"--another-boundary\r\n\r\nx\r\n--another-boundary--\r\n",
    ],
)
def test_a_body_without_the_boundary_is_an_error(body: bytes) -> None:
    with pytest.raises(MultipartError, match="no multipart boundary found"):
        read_all([body])


def test_a_body_without_the_boundary_is_an_error_even_if_it_ends_in_blank_lines() -> None:
    """Only the tail of the preamble is kept while searching; that must not hide the content."""
    body = b"<html><body>502 Bad Gateway</body></html>" + b"\r\n" * 40
    with pytest.raises(MultipartError, match="no multipart boundary found"):
        read_all([body])


@pytest.mark.parametrize("body", [b"", b"\r\n", b"  \r\n\t"], ids=repr)
def test_an_empty_or_blank_body_has_no_parts(body: bytes) -> None:
    assert read_all([body]) == []


# --- caps: a part's body and a part's headers -----------------------------------------------------

LIMIT = 100
AT_THE_CAP = multipart([(DICOM_HEADERS, b"a" * LIMIT), (DICOM_HEADERS, b"b")])
OVER_THE_CAP = multipart([(DICOM_HEADERS, b"a"), (DICOM_HEADERS, b"b" * (LIMIT + 1))])


def split_every_way(body: bytes) -> Iterator[list[bytes]]:
    yield [body]
    yield [body[i : i + 1] for i in range(len(body))]
    for at in range(0, len(body) + 1, 7):
        yield [body[:at], body[at:]]


def test_a_part_of_exactly_the_cap_is_read() -> None:
    for chunks in split_every_way(AT_THE_CAP):
        assert list(iter_parts(chunks, BOUNDARY, LIMIT)) == [b"a" * LIMIT, b"b"]


def test_a_part_over_the_cap_is_refused_however_it_is_split() -> None:
    for chunks in split_every_way(OVER_THE_CAP):
        with pytest.raises(PartTooLarge) as caught:
            list(iter_parts(chunks, BOUNDARY, LIMIT))
        assert caught.value.limit == LIMIT
        assert str(caught.value) == f"a part is larger than {LIMIT} bytes"


def test_a_last_part_over_the_cap_without_closing_delimiter_is_refused() -> None:
    body = multipart([(DICOM_HEADERS, b"c" * (LIMIT + 1))], closing=None)
    with pytest.raises(PartTooLarge):
        list(iter_parts([body], BOUNDARY, LIMIT))
    body = multipart([(DICOM_HEADERS, b"c" * LIMIT)], closing=None)
    assert list(iter_parts([body], BOUNDARY, LIMIT)) == [b"c" * LIMIT]


def test_a_long_part_is_refused_before_it_arrives_whole() -> None:
    """The reader holds at most the cap and one delimiter of a part, however long the part."""
    reader = MultipartReader(BOUNDARY, max_part_bytes=LIMIT)
    assert reader.feed(b"--" + BOUNDARY + b"\r\n" + DICOM_HEADERS + b"\r\n\r\n") == []
    fed = 0
    with pytest.raises(PartTooLarge):
        while fed < 100 * LIMIT:
            reader.feed(b"x" * 10)
            fed += 10
    assert fed <= LIMIT + len(BOUNDARY) + 4


def test_without_a_cap_any_part_is_read() -> None:
    assert list(iter_parts([OVER_THE_CAP], BOUNDARY)) == [b"a", b"b" * (LIMIT + 1)]


def test_headers_longer_than_their_cap_are_refused_while_they_stream() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.feed(b"--" + BOUNDARY + b"\r\nX-Long: ")
    with pytest.raises(MultipartError, match=f"headers are longer than {MAX_HEADER_BYTES} bytes"):
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            reader.feed(b"y" * 1000)


def test_headers_longer_than_their_cap_in_one_chunk_are_refused() -> None:
    long_headers = b"X-Long: " + b"y" * MAX_HEADER_BYTES
    with pytest.raises(MultipartError, match="headers are longer"):
        list(iter_parts([multipart([(long_headers, b"x")])], BOUNDARY))


def test_endless_transport_padding_is_refused() -> None:
    reader = MultipartReader(BOUNDARY)
    reader.feed(b"--" + BOUNDARY)
    with pytest.raises(MultipartError, match="headers are longer"):
        for _ in range(MAX_HEADER_BYTES // 1000 + 2):
            reader.feed(b" " * 1000)


def test_headers_just_under_their_cap_are_read() -> None:
    headers = b"X-Long: " + b"y" * (MAX_HEADER_BYTES - 8)
    assert list(iter_parts([multipart([(headers, b"x")])], BOUNDARY)) == [b"x"]


# --- the writer --------------------------------------------------------------------------------


def test_written_dicom_parts_read_back_with_their_headers() -> None:
    files = [b"\x00" * 10 + b"DICM first", b"second\r\n--not-a-boundary"]
    chunks = list(
        dicom_body_chunks(
            [(files[0], {"Content-ID": "<1.2.3>"}), (files[1], {})], BOUNDARY.decode()
        )
    )
    assert chunks[1] is files[0] and chunks[4] is files[1]  # the files as they are, not copied
    body = b"".join(chunks)
    assert list(iter_parts([body], BOUNDARY)) == files
    first_head = body.split(b"\r\n\r\n", 1)[0]
    assert first_head.split(b"\r\n") == [
        b"--" + BOUNDARY,
        DICOM_HEADERS,
        b"Content-ID: <1.2.3>",
        b"Content-Length: 20",
    ]
    assert body.endswith(b"--" + BOUNDARY + b"--\r\n")
