"""The model's request body, JSON and multipart, for every plan shape, from a fake DICOMweb
source."""

from __future__ import annotations

import json
import random
from collections.abc import Generator, Iterator
from typing import Any, cast

import pytest

from model_proxy.shared.config import Level
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.encoding import PIECE_BYTES
from model_proxy.shared.errors import DicomNotFound, PacsAuthFailed
from model_proxy.shared.inputs import InputPlan, InstanceList, Keyed, SingleInstance
from model_proxy.shared.model_body import ModelBody, open_model_body
from model_proxy.shared.model_multipart import MultipartBody

STUDY = "1.2.3"
SERIES_ONE = "1.2.3.1"
SERIES_TWO = "1.2.3.2"

_rng = random.Random(42)
PACS_DATA: dict[tuple[str, str | None, str | None], list[bytes]] = {
    (STUDY, None, None): [bytes(range(256)), b"", _rng.randbytes(1000), b"\x00"],
    (STUDY, SERIES_ONE, None): [_rng.randbytes(300), _rng.randbytes(17)],
    (STUDY, SERIES_TWO, None): [_rng.randbytes(5)],
    (STUDY, SERIES_TWO, "1.2.3.2.1"): [b"\x01\x02\xff"],
    (STUDY, SERIES_TWO, "1.2.3.2.2"): [_rng.randbytes(64)],
    (STUDY, SERIES_ONE, "1.2.3.1.1"): [b"first", b"a second part the body must not send"],
}


class FakeStream:
    """Plays InstanceStream: the parts of one retrieve, and whether it was closed."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts
        self.bytes_read = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            self.bytes_read += len(part) + 100  # multipart framing counts too
            yield part

    def close(self) -> None:
        self.closed = True


class FakeSource:
    """Plays DicomWebSource: retrieves from PACS_DATA, refusing what it is told to refuse."""

    server_id = "b5208f48-f748-4339-9402-d1148dab571e"

    def __init__(self, refuse: tuple[str | None, ...] | None = None) -> None:
        self.refuse = refuse
        self.opened: list[tuple[tuple[str | None, ...], FakeStream]] = []

    def retrieve(
        self, study_uid: str, series_uid: str | None = None, instance_uid: str | None = None
    ) -> FakeStream:
        key = (study_uid, series_uid, instance_uid)
        if key == self.refuse:
            raise PacsAuthFailed(f"server {self.server_id} refused access (HTTP 401)")
        if key not in PACS_DATA:
            raise DicomNotFound(f"the series was not found on server {self.server_id}")
        stream = FakeStream(PACS_DATA[key])
        self.opened.append((key, stream))
        return stream


def open_body(plan: InputPlan, source: FakeSource) -> ModelBody:
    return open_model_body(plan, cast(DicomWebSource, source))


def instance(data: bytes) -> str:
    """What the contract says a model receives for one instance."""
    return json.dumps(list(data), separators=(",", ":"))


def reference(data: bytes) -> bytes:
    return instance(data).encode()


def instances(study: str, series: str | None = None) -> list[str]:
    return [instance(data) for data in PACS_DATA[(study, series, None)]]


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


SHAPES: dict[str, tuple[InputPlan, Any]] = {
    "study: all instances, not grouped": (InstanceList(STUDY), instances(STUDY)),
    "series: its instances": (InstanceList(STUDY, SERIES_ONE), instances(STUDY, SERIES_ONE)),
    "instance: one JSON string": (
        SingleInstance(STUDY, SERIES_TWO, "1.2.3.2.1"),
        instance(b"\x01\x02\xff"),
    ),
    "study with series filters": (
        Keyed(
            (
                ("series-one", InstanceList(STUDY, SERIES_ONE)),
                ("series-two", InstanceList(STUDY, SERIES_TWO)),
            )
        ),
        {
            "series-one": {"data": instances(STUDY, SERIES_ONE)},
            "series-two": {"data": instances(STUDY, SERIES_TWO)},
        },
    ),
    "series with instance filters": (
        Keyed(
            (
                ("bottom", SingleInstance(STUDY, SERIES_TWO, "1.2.3.2.2")),
                ("top", SingleInstance(STUDY, SERIES_TWO, "1.2.3.2.1")),
            )
        ),
        {
            "bottom": {"data": instance(PACS_DATA[(STUDY, SERIES_TWO, "1.2.3.2.2")][0])},
            "top": {"data": instance(b"\x01\x02\xff")},
        },
    ),
    "study with nested instance filters": (
        Keyed(
            (
                ("series-one", InstanceList(STUDY, SERIES_ONE)),
                (
                    "slices",
                    Keyed(
                        (
                            ("top", SingleInstance(STUDY, SERIES_TWO, "1.2.3.2.1")),
                            ("bottom", SingleInstance(STUDY, SERIES_TWO, "1.2.3.2.2")),
                        )
                    ),
                ),
            )
        ),
        {
            "series-one": {"data": instances(STUDY, SERIES_ONE)},
            "slices": {
                "data": {
                    "top": {"data": instance(b"\x01\x02\xff")},
                    "bottom": {"data": instance(PACS_DATA[(STUDY, SERIES_TWO, "1.2.3.2.2")][0])},
                }
            },
        },
    ),
    "one series filter": (
        Keyed((("only", InstanceList(STUDY, SERIES_TWO)),)),
        {"only": {"data": instances(STUDY, SERIES_TWO)}},
    ),
}


@pytest.fixture(params=SHAPES.values(), ids=SHAPES.keys())
def shape(request: pytest.FixtureRequest) -> tuple[InputPlan, Any]:
    return request.param


def read(body: ModelBody) -> bytes:
    chunks = list(body)
    assert all(isinstance(chunk, bytes) and chunk for chunk in chunks)
    return b"".join(chunks)


def test_exact_bytes(shape: tuple[InputPlan, Any]) -> None:
    plan, expected = shape
    assert read(open_body(plan, FakeSource())) == compact(expected)


def test_the_model_decodes_the_contract_shape(shape: tuple[InputPlan, Any]) -> None:
    """Parsed as the reference models do: outer JSON, then ``bytes(json.loads(instance))``."""
    plan, expected = shape
    document = json.loads(read(open_body(plan, FakeSource())))
    assert document == expected

    def decoded(node: Any) -> Any:
        if isinstance(node, str):
            return bytes(json.loads(node))
        if isinstance(node, list):
            return [decoded(item) for item in node]
        return {key: {"data": decoded(value["data"])} for key, value in node.items()}

    assert decoded(document) == decoded(expected)


def test_the_study_body_carries_every_instance_in_pacs_order() -> None:
    document = json.loads(read(open_body(InstanceList(STUDY), FakeSource())))
    assert [bytes(json.loads(item)) for item in document] == PACS_DATA[(STUDY, None, None)]


def test_a_single_instance_sends_only_the_first_part() -> None:
    source = FakeSource()
    body = open_body(SingleInstance(STUDY, SERIES_ONE, "1.2.3.1.1"), source)
    assert read(body) == compact(instance(b"first"))
    assert body.instances_sent == 1


# --- opening, counting and closing --------------------------------------------------------------


def test_every_retrieve_is_opened_before_the_first_byte_in_body_order() -> None:
    source = FakeSource()
    plan, _ = SHAPES["study with nested instance filters"]
    open_body(plan, source)
    assert [key for key, _ in source.opened] == [
        (STUDY, SERIES_ONE, None),
        (STUDY, SERIES_TWO, "1.2.3.2.1"),
        (STUDY, SERIES_TWO, "1.2.3.2.2"),
    ]


def count_instances(node: Any) -> int:
    if isinstance(node, str):
        return 1
    if isinstance(node, list):
        return len(node)
    return sum(count_instances(value["data"]) for value in node.values())


def test_counts_after_reading(shape: tuple[InputPlan, Any]) -> None:
    plan, expected = shape
    source = FakeSource()
    body = open_body(plan, source)
    read(body)
    assert body.instances_sent == count_instances(expected)
    assert body.bytes_fetched == sum(stream.bytes_read for _, stream in source.opened)
    assert all(stream.closed for _, stream in source.opened)


@pytest.mark.parametrize(
    ("second_series", "refuse", "error"),
    [
        (SERIES_TWO, (STUDY, SERIES_TWO, None), PacsAuthFailed),
        ("9.9", None, DicomNotFound),
    ],
    ids=["refused", "not found"],
)
def test_a_failing_retrieve_raises_before_any_byte_and_closes_the_others(
    second_series: str, refuse: tuple[str, str, None] | None, error: type[Exception]
) -> None:
    source = FakeSource(refuse=refuse)
    plan = Keyed(
        (
            ("series-one", InstanceList(STUDY, SERIES_ONE)),
            ("series-two", InstanceList(STUDY, second_series)),
        )
    )
    with pytest.raises(error):
        open_body(plan, source)
    assert [key for key, _ in source.opened] == [(STUDY, SERIES_ONE, None)]
    assert source.opened[0][1].closed


def test_a_reader_that_stops_early_still_closes_every_stream() -> None:
    source = FakeSource()
    plan, _ = SHAPES["study with series filters"]
    body = open_body(plan, source)
    chunks = iter(body)
    assert isinstance(chunks, Generator)
    next(chunks)
    next(chunks)
    chunks.close()
    assert all(stream.closed for _, stream in source.opened)


def test_close_without_reading() -> None:
    source = FakeSource()
    body = open_body(InstanceList(STUDY), source)
    body.close()
    assert source.opened[0][1].closed
    assert body.instances_sent == 0


# --- the chunks: each instance's text as the encoder wrote it, the JSON between gathered ---


def test_each_instance_text_is_a_chunk_and_the_json_between_is_gathered() -> None:
    one, two = PACS_DATA[(STUDY, SERIES_ONE, None)]
    chunks = list(open_body(InstanceList(STUDY, SERIES_ONE), FakeSource()))
    assert chunks == [b'["', reference(one), b'","', reference(two), b'"]']


def test_keyed_bodies_gather_keys_brackets_and_quotes_between_texts() -> None:
    plan, _ = SHAPES["series with instance filters"]
    chunks = list(open_body(plan, FakeSource()))
    assert chunks[0] == b'{"bottom":{"data":"'
    assert chunks[2] == b'"},"top":{"data":"'
    assert chunks[4] == b'"}}'


def test_a_large_instance_goes_in_bounded_chunks() -> None:
    """An instance larger than the encoder's piece never becomes one text."""
    data = random.Random(8).randbytes(PIECE_BYTES + 1000)
    source = FakeSource()
    PACS_DATA[(STUDY, "1.2.3.9", None)] = [data]
    try:
        chunks = list(open_body(InstanceList(STUDY, "1.2.3.9"), source))
    finally:
        del PACS_DATA[(STUDY, "1.2.3.9", None)]
    assert b"".join(chunks) == compact([instance(data)])
    assert len(chunks) == 5  # [" text , text "]
    assert max(len(chunk) for chunk in chunks) <= 4 * PIECE_BYTES


# --- the multipart transport: the same instances as DICOM files, keys in each part's headers ---


def open_multipart(
    plan: InputPlan, source: FakeSource, level: Level = Level.SERIES
) -> MultipartBody:
    return MultipartBody.open(plan, cast(DicomWebSource, source), level=level)


def split_parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body, read strictly: each part's headers and its file."""
    delimiter = f"--{boundary}".encode()
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())
    pieces = body[: -len(delimiter) - 6].split(b"\r\n" + delimiter + b"\r\n")
    pieces[0] = pieces[0][len(delimiter) + 2 :]
    parts = []
    for piece in pieces:
        head, data = piece.split(b"\r\n\r\n", 1)
        lines = head.decode("ascii").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        assert int(headers.pop("Content-Length")) == len(data)
        assert headers.pop("Content-Type") == "application/dicom"
        parts.append((headers, data))
    return parts


def files_of(node: Any, keys: tuple[str, ...] = ()) -> list[tuple[str, bytes]]:
    """(data-filter key path, file) of a contract-shaped document, in body order."""
    if isinstance(node, str):
        return [("/".join(keys), bytes(json.loads(node)))]
    if isinstance(node, list):
        return [("/".join(keys), bytes(json.loads(item))) for item in node]
    return [pair for key, value in node.items() for pair in files_of(value["data"], (*keys, key))]


def test_multipart_parts_are_the_files_with_their_keys(shape: tuple[InputPlan, Any]) -> None:
    plan, expected = shape
    body = open_multipart(plan, FakeSource())
    parts = split_parts(read(body), body.boundary)
    got = [(headers.pop("X-Model-Proxy-Data-Key", ""), data) for headers, data in parts]
    assert all(not headers for headers, _ in parts)  # nothing but the three headers
    assert got == files_of(expected)
    assert body.instances_sent == len(got)
    assert body.encode_seconds == 0.0


def test_multipart_headers_name_the_type_boundary_and_level() -> None:
    body = open_multipart(
        SingleInstance(STUDY, SERIES_ONE, "1.2.3.1.1"), FakeSource(), Level.INSTANCE
    )
    assert body.headers == {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={body.boundary}',
        "X-Model-Proxy-Level": "/studies/series/instances",
    }
    assert [data for _, data in split_parts(read(body), body.boundary)] == [b"first"]
    assert open_body(InstanceList(STUDY), FakeSource()).headers == {
        "Content-Type": "application/json"
    }


def test_multipart_exact_bytes_and_each_file_is_its_own_chunk() -> None:
    one, two = PACS_DATA[(STUDY, SERIES_ONE, None)]
    body = open_multipart(InstanceList(STUDY, SERIES_ONE), FakeSource())
    body.boundary = "b"
    chunks = list(body)
    head = "--b\r\nContent-Type: application/dicom\r\nContent-Length: {}\r\n\r\n"
    assert chunks == [
        head.format(len(one)).encode(),
        one,
        ("\r\n" + head.format(len(two))).encode(),
        two,
        b"\r\n--b--\r\n",
    ]
    assert chunks[1] is one  # the PACS's bytes, not a copy


def test_each_multipart_body_has_its_own_boundary() -> None:
    first = open_multipart(InstanceList(STUDY), FakeSource())
    second = open_multipart(InstanceList(STUDY), FakeSource())
    assert first.boundary != second.boundary
    assert len(first.boundary) >= 32


def test_a_multipart_reader_that_stops_early_still_closes_every_stream() -> None:
    source = FakeSource()
    plan, _ = SHAPES["study with series filters"]
    chunks = iter(open_multipart(plan, source, Level.STUDY))
    next(chunks)
    assert isinstance(chunks, Generator)
    chunks.close()
    assert all(stream.closed for _, stream in source.opened)
