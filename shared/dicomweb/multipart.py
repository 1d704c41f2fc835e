"""An incremental reader of ``multipart/related`` bodies (RFC 2046), free of I/O, and the
writer of the DICOM ones model-proxy sends (STOW-RS requests, a job's several objects).

Feed it the chunks of a WADO-RS response as they arrive; it hands back each part's body as soon as
the part is complete, so a series is never held in memory whole. It tolerates what PACS servers
send in practice: unquoted or quoted boundaries, a missing closing delimiter when the server
closes the connection (Orthanc frames streamed answers that way), and transport padding.

What it buffers is bounded: a part's headers by :data:`MAX_HEADER_BYTES`, a part's body by the
``max_part_bytes`` the caller gives (:class:`PartTooLarge` as soon as a part is known to exceed
it, before it arrives whole).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "MAX_HEADER_BYTES",
    "MultipartError",
    "MultipartReader",
    "PartTooLarge",
    "boundary_from_content_type",
    "closing_delimiter",
    "dicom_body_chunks",
    "dicom_part_chunks",
    "iter_parts",
]

MAX_HEADER_BYTES = 64 * 1024
"""Most bytes of one part's headers (with the transport padding after its boundary)."""


class MultipartError(ValueError):
    """The body is not the multipart/related document its Content-Type announced."""


class PartTooLarge(MultipartError):
    """A part's body is longer than the reader's ``max_part_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a part is larger than {limit} bytes")
        self.limit = limit


_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;,\s]+))', re.IGNORECASE)


def boundary_from_content_type(content_type: str) -> bytes:
    if not content_type.lower().lstrip().startswith("multipart/"):
        raise MultipartError(f"expected a multipart response, got {content_type or 'none'!r}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("multipart response without a boundary")
    return (match.group(1) or match.group(2)).encode("latin-1")


class MultipartReader:
    """Feed bytes with :meth:`feed`; each call returns the part bodies completed by that chunk.

    A part body longer than ``max_part_bytes`` (None: no cap) raises :class:`PartTooLarge`.
    """

    def __init__(self, boundary: bytes, max_part_bytes: int | None = None) -> None:
        self._max_part = max_part_bytes
        self._dash_boundary = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray()
        self._scan_from = 0
        self._state = "preamble"  # -> "headers" -> "body" -> ... -> "done"
        self._declared: int | None = None  # the current part's Content-Length, if it has one
        self._preamble_text = False  # non-blank bytes seen before the first boundary

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._state == "done":
            return []
        self._buffer += chunk
        parts: list[bytes] = []
        while self._step(parts):
            pass
        return parts

    def close(self) -> list[bytes]:
        """End of stream: a final part without its closing delimiter is still a part, unless it
        is shorter than the Content-Length it declares (the stream was cut short)."""
        parts: list[bytes] = []
        if self._state == "body":
            buffer, size = self._buffer, len(self._buffer)
            if self._declared is not None and size >= self._declared:
                size = self._declared
            elif buffer.endswith(b"\r\n"):
                size -= 2
            body = _head(buffer, size)
            if self._declared is not None and len(body) < self._declared:
                raise MultipartError(
                    f"the response ended inside a part: {len(body)} of its "
                    f"{self._declared} bytes arrived"
                )
            self._check_part_size(len(body))
            if body:
                parts.append(body)
        elif self._state == "headers":
            raise MultipartError("the response ended inside a part's headers")
        elif self._state == "preamble" and (self._preamble_text or self._buffer.strip()):
            raise MultipartError("no multipart boundary found in the response body")
        self._buffer.clear()
        self._state = "done"
        return parts

    def _step(self, parts: list[bytes]) -> bool:
        buf = self._buffer
        if self._state == "preamble":
            at = buf.find(self._dash_boundary)
            if at < 0:
                # keep only what could be the start of the boundary
                keep = len(self._dash_boundary) - 1
                if len(buf) > keep:
                    self._preamble_text = self._preamble_text or bool(
                        buf[: len(buf) - keep].strip()
                    )
                    del buf[: len(buf) - keep]
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
                _check_header_size(len(buf))
                return False
            del buf[: line_end + 2]  # transport padding, then CRLF
            self._state = "headers"
            return True
        if self._state == "headers":
            if buf[:2] == b"\r\n":  # a part without headers
                del buf[:2]
                self._state = "body"
                self._scan_from = 0
                self._declared = None
                return True
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                _check_header_size(len(buf))
                return False
            _check_header_size(end)
            self._declared = _content_length(bytes(buf[:end]))
            del buf[: end + 4]
            self._state = "body"
            self._scan_from = 0
            return True
        if self._state == "body":
            at = buf.find(self._delimiter, self._scan_from)
            if at < 0:
                self._scan_from = max(0, len(buf) - len(self._delimiter) + 1)
                # only the last len(delimiter) - 1 bytes may yet begin a delimiter
                self._check_part_size(self._scan_from)
                return False
            self._check_part_size(at)
            parts.append(_head(buf, at))
            del buf[: at + len(self._delimiter)]
            self._state = "after_boundary"
            return True
        return False

    def _check_part_size(self, size: int) -> None:
        if self._max_part is not None and size > self._max_part:
            raise PartTooLarge(self._max_part)


def _head(buffer: bytearray, end: int) -> bytes:
    """``bytes(buffer[:end])`` in one copy (slicing the bytearray first would copy twice)."""
    with memoryview(buffer) as view:
        return bytes(view[:end])


def _content_length(headers: bytes) -> int | None:
    """The Content-Length a part's headers declare, if they declare a valid one."""
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def _check_header_size(size: int) -> None:
    if size > MAX_HEADER_BYTES:
        raise MultipartError(f"a part's headers are longer than {MAX_HEADER_BYTES} bytes")


def iter_parts(
    chunks: Iterable[bytes], boundary: bytes, max_part_bytes: int | None = None
) -> Iterator[bytes]:
    """Yield each part body of a multipart stream as soon as it is complete."""
    reader = MultipartReader(boundary, max_part_bytes)
    for chunk in chunks:
        yield from reader.feed(chunk)
        if reader.done:
            return
    yield from reader.close()


def dicom_part_chunks(data: bytes, headers: Mapping[str, str], boundary: str) -> Iterator[bytes]:
    """One ``application/dicom`` part of a body: its boundary and headers (its length and the
    extra ``headers`` given), the file as it is (not copied), and the CRLF that ends it."""
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    yield f"{head}Content-Length: {len(data)}\r\n\r\n".encode()
    yield data
    yield b"\r\n"


def closing_delimiter(boundary: str) -> bytes:
    """The line that ends a multipart body after its last part."""
    return f"--{boundary}--\r\n".encode()


def dicom_body_chunks(
    parts: Iterable[tuple[bytes, Mapping[str, str]]], boundary: str
) -> Iterator[bytes]:
    """A ``multipart/related; type="application/dicom"`` body, chunk by chunk: one
    :func:`dicom_part_chunks` per file, then the :func:`closing_delimiter`. ``parts`` is read
    one at a time, as the chunks are."""
    for data, headers in parts:
        yield from dicom_part_chunks(data, headers, boundary)
    yield closing_delimiter(boundary)
