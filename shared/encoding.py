"""The model contract's instance encoding: a DICOM file as the JSON text of its byte values.

``encode_byte_array(data)`` is byte-identical to
``json.dumps(list(data), separators=(",", ":")).encode()`` and many times faster: every byte
value is looked up in a table of its decimal digits and a comma, padded with NUL to four bytes,
and the padding is then deleted in one pass by ``bytes.translate``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["encode_byte_array", "encode_instance_string"]

_PAD = b"\0"


@lru_cache(maxsize=1)
def _digit_table() -> npt.NDArray[np.uint32]:
    cells = b"".join(f"{value},".encode().ljust(4, _PAD) for value in range(256))
    return np.frombuffer(cells, dtype=np.uint32).copy()


def encode_byte_array(data: bytes | bytearray | memoryview) -> bytes:
    """``[0,12,255,...]`` for the given bytes, exactly as ``json.dumps(list(data))`` compact."""
    if len(data) == 0:
        return b"[]"
    values = np.frombuffer(data, dtype=np.uint8)
    text = _digit_table().take(values).tobytes().translate(None, _PAD)
    # replace the trailing comma by the closing bracket
    return b"[" + text[:-1] + b"]"


def encode_instance_string(data: bytes | bytearray | memoryview) -> bytes:
    """One instance as the model receives it: a JSON string holding its byte-array JSON.

    The array text has only digits, commas and brackets, so quoting it needs no escaping.
    """
    return b'"' + encode_byte_array(data) + b'"'
