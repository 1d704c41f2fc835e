"""The benchmark's floors do the same work as model-proxy, or their ratios would mislead."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import cast

import pytest
import requests

from bench.floor import _parts, numpy_encode, orjson_encode
from devtools.dicom import ct_series


def reference(data: bytes) -> bytes:
    return json.dumps(list(data), separators=(",", ":")).encode()


INPUTS = {
    "empty": b"",
    "one byte": b"\x07",
    "all 256 values": bytes(range(256)),
    "random": random.Random(3).randbytes(5000),
    "CT slice": ct_series(study_uid="1.2.3", slices=1, rows=64, columns=64, seed=1)[0].data,
}


@pytest.mark.parametrize("data", INPUTS.values(), ids=INPUTS.keys())
def test_the_floor_encoders_write_the_contract_text(data: bytes) -> None:
    assert numpy_encode(data) == reference(data)
    assert orjson_encode(data) == reference(data)


class CannedResponse:
    """Plays a streamed requests.Response: a Content-Type and the body in given chunk sizes."""

    def __init__(self, body: bytes, chunk: int) -> None:
        self.headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=XyZ'}
        self._body = body
        self._chunk = chunk

    def iter_content(self, size: int) -> Iterator[bytes]:
        for start in range(0, len(self._body), self._chunk):
            yield self._body[start : start + self._chunk]


def multipart(parts: list[bytes], closed: bool) -> bytes:
    body = b"".join(
        b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in parts
    )
    return body + (b"--XyZ--\r\n" if closed else b"")


@pytest.mark.parametrize("closed", [True, False], ids=["closing boundary", "connection close"])
@pytest.mark.parametrize("chunk", [1, 7, 100, 1 << 20])
def test_the_floor_splits_a_retrieve_into_its_instances(closed: bool, chunk: int) -> None:
    parts = [random.Random(size).randbytes(size) for size in (300, 1, 2000)]
    response = CannedResponse(multipart(parts, closed), chunk)
    assert list(_parts(cast(requests.Response, response))) == parts
