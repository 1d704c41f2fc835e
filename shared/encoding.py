"""The model contract's instance encoding: a DICOM file as the JSON text of its byte values.

``encode_byte_array(data)`` is byte-identical to
``json.dumps(list(data), separators=(",", ":")).encode()``, about 15 times faster, at the same
speed whatever the bytes are (there is no data-dependent branch).

How: the input is cut into blocks of :data:`_BLOCK` bytes so every work array stays in the CPU
cache and is reused (one set per thread). For a block, each byte value ``v`` takes ``L`` = 2, 3
or 4 bytes of text with its comma; the cumulated lengths give the position ``e`` of each comma.
The three characters before a comma, right-aligned (hundreds, tens, units; ``,`` where the value
has no such digit), are computed with vector arithmetic and written with three scatters
``out[e - 3] = hundreds``, ``out[e - 2] = tens``, ``out[e - 1] = units`` into an output area
filled with commas. A short value's padding lands in the previous value's text, but only where a
later scatter writes the right character (or on a comma, with a comma), so the passes in that
order leave exactly the JSON text.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

__all__ = ["encode_byte_array", "encode_instance_string"]

_BLOCK = 1 << 16  # input bytes per block: ~1.3 MB of work arrays, reused
_HEAD = 4  # room before a block's text: its padding reaches 2 bytes back; openers go there
_COMMA = ord(",")
_ZERO = ord("0")

_U8 = npt.NDArray[np.uint8]


class _Work(threading.local):
    """One thread's work arrays, allocated on its first encoding."""

    def __init__(self) -> None:
        self.ready = False

    def allocate(self) -> None:
        self.tens, self.hundreds = np.empty(_BLOCK, np.bool_), np.empty(_BLOCK, np.bool_)
        self.q, self.h, self.tmp, self.c0, self.c1, self.c2 = (
            np.empty(_BLOCK, np.uint8) for _ in range(6)
        )
        self.ends = np.empty(_BLOCK, np.intp)
        self.out = np.empty(_HEAD + 4 * _BLOCK + 4, np.uint8)
        self.ready = True

    def encode_block(self, values: _U8) -> int:
        """Write ``v,`` for each value to ``out[_HEAD:]``; return the number of bytes written."""
        n = len(values)
        tens, hundreds = self.tens[:n], self.hundreds[:n]
        q, h, tmp, c0, c1, c2 = (
            a[:n] for a in (self.q, self.h, self.tmp, self.c0, self.c1, self.c2)
        )
        ends = self.ends[:n]
        ten_u8, hundred_u8 = tens.view(np.uint8), hundreds.view(np.uint8)
        np.greater_equal(values, 10, out=tens)
        np.greater_equal(values, 100, out=hundreds)
        # lengths with the comma (2 + has tens + has hundreds), cumulated: the end of each value
        np.add(ten_u8, hundred_u8, out=tmp)
        tmp += 2
        np.cumsum(tmp, out=ends)
        # the digits: units, tens (or a comma), hundreds (or a comma)
        np.floor_divide(values, 10, out=q)
        np.floor_divide(values, 100, out=h)
        np.multiply(q, 10, out=tmp)
        np.subtract(values, tmp, out=c2)
        c2 += _ZERO
        np.multiply(h, 10, out=tmp)
        np.subtract(q, tmp, out=c1)
        c1 += _COMMA
        np.left_shift(ten_u8, 2, out=tmp)  # "0" - "," == 4
        c1 += tmp
        np.add(h, _COMMA, out=c0)
        np.left_shift(hundred_u8, 2, out=tmp)
        c0 += tmp
        used = int(ends[-1])
        out = self.out
        out[_HEAD : _HEAD + used] = _COMMA
        # ends[i] - 1 is value i's comma, relative to _HEAD; each scatter's indices are distinct
        out[_HEAD - 4 :][ends] = c0
        out[_HEAD - 3 :][ends] = c1
        out[_HEAD - 2 :][ends] = c2
        return used


_work = _Work()


def _encode(data: bytes | bytearray | memoryview, opening: bytes, closing: bytes) -> bytes:
    """``opening`` + the values' text + ``closing``, the last value's comma dropped."""
    values = np.frombuffer(data, dtype=np.uint8)
    total = len(values)
    if total == 0:
        return opening + closing
    work = _work
    if not work.ready:
        work.allocate()
    out = work.out
    pieces = []
    for start in range(0, total, _BLOCK):
        block = values[start : start + _BLOCK]
        used = work.encode_block(block)
        first, end = _HEAD, _HEAD + used
        if start == 0:
            first -= len(opening)
            out[first:_HEAD] = np.frombuffer(opening, np.uint8)
        if start + len(block) == total:
            end += len(closing) - 1  # the closing replaces the last comma
            out[end - len(closing) : end] = np.frombuffer(closing, np.uint8)
        pieces.append(out[first:end].tobytes())
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def encode_byte_array(data: bytes | bytearray | memoryview) -> bytes:
    """``[0,12,255,...]`` for the given bytes, exactly as ``json.dumps(list(data))`` compact."""
    return _encode(data, b"[", b"]")


def encode_instance_string(data: bytes | bytearray | memoryview, prefix: bytes = b"") -> bytes:
    """One instance as the model receives it: a JSON string holding its byte-array JSON.

    The array text has only digits, commas and brackets, so quoting it needs no escaping.
    ``prefix`` (at most two bytes, e.g. the ``,`` between the items of an array) is written
    before the string without copying the result once more.
    """
    if len(prefix) > 2:
        raise ValueError("prefix is at most two bytes")
    return _encode(data, prefix + b'"[', b']"')
