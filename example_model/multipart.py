"""Reading a ``multipart/related`` body as it streams in, part by part. No I/O here.

model-proxy sends a model with ``"transport": "multipart"`` its instances as DICOM files in a
``multipart/related; type="application/dicom"`` body (model-contract §6). Feed the request's
chunks to :class:`MultipartParser` as they arrive; it hands back each :class:`Part` (its headers
and its bytes) as soon as the part is complete, so the body is never held whole beside its files.
A part's ``Content-Length``, when it has one, is trusted to find its end (and checked against the
boundary that must follow); otherwise the boundary is searched for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from model_proxy.example_model.errors import InvalidInput

__all__ = ["MAX_HEADER_BYTES", "MultipartParser", "Part", "boundary_of", "is_multipart"]

MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of one part's headers, or of the preamble before the first boundary."""

_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    """One part of the body: its headers (names in lower case) and its bytes."""

    headers: Mapping[str, str]
    data: bytes


def is_multipart(content_type: str) -> bool:
    """Whether a request's Content-Type announces a ``multipart/related`` body."""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/related"


def boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart Content-Type (quoted or not)."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise InvalidInput("the multipart/related body has no boundary in its Content-Type")
    return (match.group(1) or match.group(2)).encode("latin-1")


class MultipartParser:
    """Feed the body's chunks with :meth:`feed`; call :meth:`close` at its end."""

    def __init__(self, boundary: bytes) -> None:
        self._dash_boundary = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray()
        self._state = "preamble"  # -> "after_boundary" -> "headers" -> "body" -> ... -> "done"
        self._headers: dict[str, str] = {}
        self._length: int | None = None  # the current part's Content-Length, if it has one
        self._scan_from = 0
        self.parts_read = 0

    def feed(self, chunk: bytes) -> list[Part]:
        """The parts that ``chunk`` completes (what follows the closing boundary is ignored)."""
        if self._state == "done":
            return []
        self._buffer += chunk
        parts: list[Part] = []
        while self._step(parts):
            pass
        return parts

    def close(self) -> None:
        """The body ended: it must have ended with its closing boundary."""
        if self._state != "done":
            raise InvalidInput(
                f"the multipart body ended before its closing boundary (after {self.parts_read} "
                "complete parts)"
            )

    def _step(self, parts: list[Part]) -> bool:
        """One step of the state machine; False when it needs more bytes (or is done)."""
        buf = self._buffer
        if self._state == "preamble":
            at = buf.find(self._dash_boundary)
            if at < 0:
                _check_header_size(len(buf), "the bytes before the first boundary")
                return False
            del buf[: at + len(self._dash_boundary)]
            self._state = "after_boundary"
            return True
        if self._state == "after_boundary":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "done"
                buf.clear()
                return False
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                _check_header_size(len(buf), "a boundary line")
                return False
            del buf[: line_end + 2]  # transport padding, then CRLF
            self._state = "headers"
            return True
        if self._state == "headers":
            return self._read_headers(buf)
        return self._read_body(buf, parts)

    def _read_headers(self, buf: bytearray) -> bool:
        if buf[:2] == b"\r\n":  # a part without headers
            end, skip = 0, 2
        else:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                _check_header_size(len(buf), "a part's headers")
                return False
            _check_header_size(end, "a part's headers")
            skip = end + 4
        self._headers = _parse_headers(bytes(buf[:end]))
        del buf[:skip]
        length = self._headers.get("content-length")
        if length is not None and not length.isdigit():
            raise InvalidInput(f"part {self.parts_read + 1} has a bad Content-Length {length!r}")
        self._length = int(length) if length is not None else None
        self._scan_from = 0
        self._state = "body"
        return True

    def _read_body(self, buf: bytearray, parts: list[Part]) -> bool:
        if self._length is not None:
            end = self._length + len(self._delimiter)
            if len(buf) < end:
                return False
            if buf[self._length : end] != self._delimiter:
                raise InvalidInput(
                    f"part {self.parts_read + 1} is not followed by the boundary where its "
                    "Content-Length says it ends"
                )
            at = self._length
        else:
            at = buf.find(self._delimiter, self._scan_from)
            if at < 0:
                # only the last len(delimiter) - 1 bytes may yet begin a delimiter
                self._scan_from = max(0, len(buf) - len(self._delimiter) + 1)
                return False
        with memoryview(buf) as view:
            data = bytes(view[:at])
        del buf[: at + len(self._delimiter)]
        parts.append(Part(self._headers, data))
        self.parts_read += 1
        self._state = "after_boundary"
        return True


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n") if block else []:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidInput(f"a part has a malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def _check_header_size(size: int, what: str) -> None:
    if size > MAX_HEADER_BYTES:
        raise InvalidInput(f"{what} in the multipart body exceed {MAX_HEADER_BYTES} bytes")
