"""The floors: what a plain script does for the same work, written here without model-proxy.

Nothing in this module imports the project. :class:`SyncFloor` is the synchronous inference as
one process would do it by hand: a WADO-RS retrieve of the series streamed with ``requests``,
each part cut out of the multipart body, each instance encoded as the zhiva JSON string with
orjson's numpy serializer, all sent to the model in one chunked POST, the answer read.
:func:`numpy_encode` is a plain numpy encoder of the same text (a lookup table of each byte
value's characters), the floor of the encoder rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import orjson
import requests

__all__ = ["SyncFloor", "numpy_encode", "orjson_encode"]


def _table() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """Each byte value's text with its comma, left-aligned in 4 bytes, and which bytes count."""
    text = np.zeros((256, 4), np.uint8)
    used = np.zeros((256, 4), np.bool_)
    for value in range(256):
        chars = f"{value},".encode()
        text[value, : len(chars)] = np.frombuffer(chars, np.uint8)
        used[value, : len(chars)] = True
    return text, used


_TEXT, _USED = _table()


def numpy_encode(data: bytes) -> bytes:
    """``[v,v,...]`` for the bytes of ``data``: table lookup, then the used characters kept."""
    values = np.frombuffer(data, np.uint8)
    if len(values) == 0:
        return b"[]"
    text = _TEXT[values][_USED[values]]
    return b"[" + text[:-1].tobytes() + b"]"


def orjson_encode(data: bytes) -> bytes:
    """The same text, by orjson's serializer of numpy arrays."""
    return orjson.dumps(np.frombuffer(data, np.uint8), option=orjson.OPT_SERIALIZE_NUMPY)


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


def _parts(response: requests.Response) -> Iterator[bytes]:
    """The part bodies of a ``multipart/related`` response, as it streams in."""
    found = _BOUNDARY.search(response.headers["Content-Type"])
    if found is None:
        raise RuntimeError("the retrieve answered without a multipart boundary")
    delimiter = b"\r\n--" + found.group(1).encode()
    buffer = bytearray(b"\r\n")  # so that the first boundary reads as a delimiter too
    start = -1  # where the current part's body starts in the buffer; -1: in its headers
    for chunk in response.iter_content(1 << 20):
        buffer += chunk
        while True:
            if start < 0:
                at = buffer.find(b"\r\n\r\n", len(delimiter))
                if at < 0:
                    break
                start = at + 4
            end = buffer.find(delimiter, start)
            if end < 0:
                break
            yield bytes(memoryview(buffer)[start:end])
            del buffer[:end]
            start = -1
    if start >= 0 and len(buffer) > start + 2:  # a server that closes instead of a last boundary
        yield bytes(buffer[start:].removesuffix(b"\r\n"))


class SyncFloor:
    """One synchronous inference of a series, by hand; calling it returns the seconds taken."""

    def __init__(
        self, dicomweb: str, auth: tuple[str, str], study: str, series: str, model_url: str
    ) -> None:
        self._session = requests.Session()
        self._session.trust_env = False
        self._auth = auth
        self._retrieve = f"{dicomweb}/studies/{study}/series/{series}"
        self._model_url = model_url

    def _body(self, response: requests.Response) -> Iterator[bytes]:
        yield b"["
        separator = b'"'
        for part in _parts(response):
            yield separator
            yield orjson_encode(part)
            separator = b'","'
        yield b'"]' if separator != b'"' else b"]"

    def __call__(self) -> float:
        started = time.perf_counter()
        with self._session.get(
            self._retrieve,
            auth=self._auth,
            headers={"Accept": 'multipart/related; type="application/dicom"'},
            stream=True,
            timeout=(10, 120),
        ) as response:
            response.raise_for_status()
            answer = self._session.post(
                self._model_url,
                data=self._body(response),
                headers={"Content-Type": "application/json"},
                timeout=(10, 600),
            )
        elapsed = time.perf_counter() - started
        if answer.status_code != 200 or answer.content != b"{}":
            raise AssertionError(f"the model answered {answer.status_code}: {answer.text[:200]}")
        return elapsed
