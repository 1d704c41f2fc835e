"""The stored form of a model's answer: compressed once by the worker, served as it is.

A result key (:meth:`JobKeys.result`) holds one header line, then the answer's body::

    b"\\x00model-proxy-answer <encoding> <tag> <size>\\n" + body

``encoding`` is ``gzip`` (the body is one gzip member) or ``identity`` (the JSON as the model
answered it, after unwrapping: small answers, or compression turned off); ``tag`` is a hash of
the body, computed once here and served as the answer's ``ETag``; ``size`` is the JSON's length,
the ``Content-Length`` of the decompressed answer. Results stored before answers were compressed
are the plain JSON, with no header: a JSON document never starts with a NUL byte, so the two
are told apart by the first bytes. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["StoredAnswer", "answer_json", "decompressed_chunks", "pack_answer", "read_answer"]

_MAGIC = b"\x00model-proxy-answer "
_MAX_HEADER = 128
_GZIP_WBITS = 31  # zlib's gzip container (header and CRC-32 trailer)
_CHUNK = 256 * 1024  # of decompressed output at a time


@dataclass(frozen=True)
class StoredAnswer:
    """A stored answer as the API serves it: its body as stored, and what it is."""

    body: bytes
    gzipped: bool  # the body is gzip; else the JSON itself
    tag: str  # hex hash of the body: the answer's entity tag
    size: int  # bytes of the JSON, decompressed


def _tag(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def pack_answer(document: bytes, level: int, min_bytes: int) -> bytes:
    """The value to store for the model's JSON ``document``: gzip at ``level`` (1-9) when it
    has at least ``min_bytes``; as it is when smaller or when ``level`` is 0."""
    gzipped = level > 0 and len(document) >= min_bytes
    body = zlib.compress(document, level, wbits=_GZIP_WBITS) if gzipped else document
    header = f"{'gzip' if gzipped else 'identity'} {_tag(body)} {len(document)}\n".encode()
    return b"".join((_MAGIC, header, body))


def read_answer(value: bytes) -> StoredAnswer:
    """What a result key holds; a value without the header is a plain JSON answer stored
    before answers were compressed (its tag is then computed here)."""
    if value.startswith(_MAGIC):
        end = value.find(b"\n", 0, _MAX_HEADER)
        fields = value[len(_MAGIC) : end].decode("ascii", "replace").split(" ")
        if end > 0 and len(fields) == 3 and fields[0] in ("gzip", "identity"):
            encoding, tag, size = fields
            return StoredAnswer(value[end + 1 :], encoding == "gzip", tag, int(size))
    return StoredAnswer(value, False, _tag(value), len(value))


def decompressed_chunks(answer: StoredAnswer, chunk: int = _CHUNK) -> Iterator[bytes]:
    """The JSON of ``answer``, at most ``chunk`` bytes at a time (the whole answer is never
    held decompressed)."""
    if not answer.gzipped:
        yield answer.body
        return
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    pending = answer.body
    while not inflater.eof:
        out = inflater.decompress(pending, chunk)
        pending = inflater.unconsumed_tail
        if not out and not pending:
            raise ValueError("the stored answer ends early")
        if out:
            yield out


def answer_json(value: bytes) -> bytes:
    """The JSON document a stored value holds, whole (for checks and small answers)."""
    return b"".join(decompressed_chunks(read_answer(value)))
