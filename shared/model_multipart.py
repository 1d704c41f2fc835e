"""The opt-in binary body: the instances as DICOM Part-10 files in one multipart/related body.

A model whose models.json entry says ``"transport": "multipart"`` receives (model-contract §6)::

    POST <uri>
    Content-Type: multipart/related; type="application/dicom"; boundary=<boundary>
    X-Model-Proxy-Level: /studies/series

    --<boundary>
    Content-Type: application/dicom
    Content-Length: <bytes>
    X-Model-Proxy-Data-Key: <dataKey>            (only for a model with a dataFilter)

    <the Part-10 file, as the PACS sent it>
    --<boundary>
    ...
    --<boundary>--

the DICOMweb convention (the shape of a WADO-RS answer). The files go out in the order the JSON
body would hold them, each as the PACS's multipart reader handed it over (no copy, no encoding),
so the body streams with the same bounded memory as the JSON one. The data-filter key of a part
is the ``dataKey`` of models.json; a nested instance input is ``<series key>/<instance key>``
(keys hold only letters, digits, ``_`` and ``-``, so ``/`` cannot be part of one).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from model_proxy.shared.config.schema import Level
from model_proxy.shared.dicomweb.source import InstanceStream
from model_proxy.shared.inputs import InputPlan, Keyed, SingleInstance
from model_proxy.shared.model_body import ModelBody

__all__ = ["DATA_KEY_HEADER", "LEVEL_HEADER", "MULTIPART_TYPE", "MultipartBody"]

MULTIPART_TYPE = 'multipart/related; type="application/dicom"'
DATA_KEY_HEADER = "X-Model-Proxy-Data-Key"
"""A part's data-filter key: ``<dataKey>``, or ``<series key>/<instance key>`` when nested."""
LEVEL_HEADER = "X-Model-Proxy-Level"
"""The level the viewer asked for, as models.json spells it (``/studies/series/instances``: the
body holds exactly one file, where the JSON body holds a single string instead of a list)."""


def _new_boundary() -> str:
    return f"model-proxy-{uuid.uuid4().hex}"


@dataclass
class MultipartBody(ModelBody):
    """The plan's instances as the parts of a ``multipart/related`` body; iterate once, then
    :meth:`close`. Open it with ``MultipartBody.open(plan, source, level=...)``."""

    level: Level | None = None
    boundary: str = field(default_factory=_new_boundary)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": f"{MULTIPART_TYPE}; boundary={self.boundary}"}
        if self.level is not None:
            headers[LEVEL_HEADER] = self.level.value
        return headers

    def _emit(self, plan: InputPlan, pending: Iterator[InstanceStream]) -> Iterator[bytes]:
        yield from self._parts(plan, pending, ())
        self._write(b"--" + self.boundary.encode() + b"--\r\n")

    def _parts(
        self, plan: InputPlan, pending: Iterator[InstanceStream], keys: tuple[str, ...]
    ) -> Iterator[bytes]:
        if isinstance(plan, Keyed):
            for key, inner in plan.entries:
                yield from self._parts(inner, pending, (*keys, key))
            return
        stream = next(pending)
        for data in stream:
            yield from self._part(data, "/".join(keys))
            if isinstance(plan, SingleInstance):
                break  # exactly one part

    def _part(self, data: bytes, data_key: str) -> Iterator[bytes]:
        """One part: its head gathered with what came before, the file yielded as it is."""
        self._sent(data)
        head = (
            f"--{self.boundary}\r\nContent-Type: application/dicom\r\n"
            f"Content-Length: {len(data)}\r\n"
        )
        if data_key:
            head += f"{DATA_KEY_HEADER}: {data_key}\r\n"
        self._write(head.encode() + b"\r\n")
        yield self._flush()
        if data:
            yield data
        self._write(b"\r\n")
