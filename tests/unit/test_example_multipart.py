"""The example model's multipart reader, on canned bytes and on model-proxy's own multipart body."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import cast

import pytest

from model_proxy.example_model.errors import InvalidInput
from model_proxy.example_model.multipart import (
    MAX_HEADER_BYTES,
    MultipartParser,
    Part,
    boundary_of,
    is_multipart,
)
from model_proxy.shared.config import Level
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.inputs import InstanceList, Keyed
from model_proxy.shared.model_multipart import MultipartBody

_rng = random.Random(12)
FILES = [_rng.randbytes(3000), b"", b"\r\n--b\r\n", _rng.randbytes(17)]


def parse(chunks: list[bytes], boundary: bytes = b"b") -> list[Part]:
    parser = MultipartParser(boundary)
    parts = [part for chunk in chunks for part in parser.feed(chunk)]
    parser.close()
    return parts


def in_pieces(body: bytes, size: int) -> list[bytes]:
    return [body[start : start + size] for start in range(0, len(body), size)]


def canned(with_length: bool) -> bytes:
    body = b"preamble to ignore\r\n"
    for data in FILES[:2] + FILES[3:]:
        length = f"Content-Length: {len(data)}\r\n" if with_length else ""
        body += (
            f"--b  \r\nContent-Type: application/dicom\r\n{length}\r\n".encode() + data + b"\r\n"
        )
    return body + b"--b--\r\nan epilogue to ignore"


@pytest.mark.parametrize("with_length", [True, False], ids=["Content-Length", "boundary search"])
@pytest.mark.parametrize("size", [1, 2, 5, 64, 1 << 20])
def test_parts_whatever_the_chunks(with_length: bool, size: int) -> None:
    parts = parse(in_pieces(canned(with_length), size))
    assert [part.data for part in parts] == FILES[:2] + FILES[3:]
    assert parts[0].headers["content-type"] == "application/dicom"


def test_content_length_finds_the_end_of_a_file_that_holds_the_delimiter() -> None:
    data = FILES[2]
    body = f"--b\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n--b--\r\n"
    assert [part.data for part in parse(in_pieces(body, 3))] == [data]


class Stream:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts, self.bytes_read, self.read_seconds = parts, 0, 0.0

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts

    def close(self) -> None:
        pass


class Source:
    def __init__(self) -> None:
        self.by_series = {"1.1": FILES[:2], "1.2": FILES[2:]}

    def retrieve(
        self, study: str, series: str | None = None, instance: str | None = None
    ) -> Stream:
        assert series is not None
        return Stream(self.by_series[series])


def test_reads_what_model_proxy_writes() -> None:
    plan = Keyed((("one", InstanceList("1", "1.1")), ("two", InstanceList("1", "1.2"))))
    body = MultipartBody.open(plan, cast(DicomWebSource, Source()), level=Level.STUDY)
    content_type = body.headers["Content-Type"]
    assert is_multipart(content_type)

    parts = parse(list(body), boundary_of(content_type))

    assert [part.data for part in parts] == FILES
    assert [part.headers["x-model-proxy-data-key"] for part in parts] == ["one"] * 2 + ["two"] * 2


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ('multipart/related; type="application/dicom"; boundary=abc', b"abc"),
        ('Multipart/Related; boundary="a b:c"; type="application/dicom"', b"a b:c"),
    ],
)
def test_boundary_quoted_or_not(content_type: str, boundary: bytes) -> None:
    assert is_multipart(content_type)
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type", ["application/json", "", "multipart/form-data; boundary=x"]
)
def test_other_types_are_not_the_multipart_transport(content_type: str) -> None:
    assert not is_multipart(content_type)


def test_headers_longer_than_the_cap_are_refused_before_they_end() -> None:
    parser = MultipartParser(b"b")
    with pytest.raises(InvalidInput, match="headers in the multipart body exceed 65536 bytes"):
        parser.feed(b"--b\r\nX-Long: " + b"x" * (MAX_HEADER_BYTES + 1))
