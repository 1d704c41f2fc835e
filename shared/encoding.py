"""The model contract's instance encoding: a DICOM file as the JSON text of its byte values.

``encode_byte_array(data)`` is byte-identical to
``json.dumps(list(data), separators=(",", ":")).encode()``. The text is written by orjson's
serializer of numpy arrays (compiled, about 25 times ``json.dumps`` on CT slices): a uint8
array serializes as exactly that compact list of integers.

:func:`iter_instance_string` produces an instance as the model receives it (a JSON string
holding that text) in pieces of at most :data:`PIECE_BYTES` input bytes, so a large instance
never exists as one text.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson

__all__ = ["PIECE_BYTES", "encode_byte_array", "encode_instance_string", "iter_instance_string"]

PIECE_BYTES = 1 << 21
"""Input bytes encoded at once: an instance up to this size is one piece (about 3.6x as text)."""

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def encode_byte_array(data: bytes | bytearray | memoryview) -> bytes:
    """``[0,12,255,...]`` for the given bytes, exactly as ``json.dumps(list(data))`` compact."""
    return orjson.dumps(np.frombuffer(data, np.uint8), option=_NUMPY)


def iter_instance_string(
    data: bytes | bytearray | memoryview, piece_bytes: int = PIECE_BYTES
) -> Iterator[bytes]:
    """``"[0,12,...]"`` (the quotes included) in pieces that, joined, equal
    :func:`encode_instance_string`. The array text has only digits, commas and brackets, so
    quoting it needs no escaping.

    The pieces alternate: the even ones are the few bytes of JSON around and between texts
    (``"``, ``"[``, ``,``, ``]"``), the odd ones the text of at most ``piece_bytes`` input bytes
    each; an instance that size or smaller is three pieces, its whole text in the middle.
    """
    values = np.frombuffer(data, np.uint8)
    if len(values) <= piece_bytes:
        yield b'"'
        yield orjson.dumps(values, option=_NUMPY)
        yield b'"'
        return
    # Each text is "[a,...,z]": its brackets give way to the JSON between pieces (one copy of a
    # piece, only for instances larger than a piece).
    for start in range(0, len(values), piece_bytes):
        yield b"," if start else b'"['
        yield orjson.dumps(values[start : start + piece_bytes], option=_NUMPY)[1:-1]
    yield b']"'


def encode_instance_string(data: bytes | bytearray | memoryview, prefix: bytes = b"") -> bytes:
    """One instance as the model receives it: a JSON string holding its byte-array JSON,
    ``prefix`` (at most two bytes, e.g. the ``,`` between the items of an array) before it."""
    if len(prefix) > 2:
        raise ValueError("prefix is at most two bytes")
    return prefix + b'"' + encode_byte_array(data) + b'"'
