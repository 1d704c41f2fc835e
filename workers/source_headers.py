"""The headers of the instances a job sends to its model, kept to build its DICOM objects.

Each instance's header is read from the bytes the worker already streams to the model (pydicom,
``stop_before_pixels``): no second download, and the pixels are never copied. What is kept is
bounded: once the headers together pass the cap (``MODEL_PROXY_MAX_SOURCE_HEADER_BYTES``) they
are dropped and the collector says why, so the job still answers while its objects are not made.
An instance pydicom cannot read is skipped (the objects then lack it, and say so if the answer
refers to it).
"""

from __future__ import annotations

import io
import logging

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

__all__ = ["SourceHeaders"]

log = logging.getLogger(__name__)


class SourceHeaders:
    """A callable that keeps the header of each instance it is given, up to ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.headers: list[Dataset] = []
        self.header_bytes = 0
        self.unreadable = 0
        self.overflowed = False

    def __call__(self, data: bytes) -> None:
        if self.overflowed:
            return
        stream = io.BytesIO(data)
        try:
            header = dcmread(stream, stop_before_pixels=True, force=False)
        except (InvalidDicomError, ValueError, EOFError, OSError, KeyError):
            self.unreadable += 1
            return
        header.buffer = None  # it would hold the whole instance, pixels and all
        self.header_bytes += stream.tell()
        if self.header_bytes > self.max_bytes:
            self.overflowed = True
            self.headers.clear()
            return
        self.headers.append(header)

    def problem(self) -> str | None:
        """Why the headers cannot serve to build objects, or None when they can."""
        if self.overflowed:
            return (
                f"the source headers exceed {self.max_bytes} bytes "
                "(MODEL_PROXY_MAX_SOURCE_HEADER_BYTES)"
            )
        return None
