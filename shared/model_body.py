"""The request body a model receives, produced as a stream of JSON chunks.

The body follows the shape of an :class:`~shared.inputs.InputPlan`. Every retrieve it needs is
opened (and its first instance read) before the first byte is produced, so a missing series or a
refused login fails before the model is called; the instances then flow from the PACS through the
encoder to the model one at a time.

Each instance's text goes to the HTTP client as the encoder wrote it (no copy); the few bytes of
JSON between texts (quotes, commas, brackets, keys) are gathered into one small chunk each.

:class:`ModelBody` is the zhiva JSON body every model takes; a subclass that overrides
:meth:`ModelBody._emit` and :attr:`ModelBody.headers` sends the same instances in another format
(:class:`~shared.model_multipart.MultipartBody`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self

from model_proxy.shared.dicomweb.source import DicomWebSource, InstanceStream
from model_proxy.shared.encoding import iter_instance_string
from model_proxy.shared.inputs import InputPlan, InstanceList, Keyed, SingleInstance

__all__ = ["JSON_HEADERS", "ModelBody", "open_model_body"]

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class ModelBody:
    """An iterable of JSON byte chunks; iterate once, then :meth:`close`."""

    plan: InputPlan
    streams: list[InstanceStream] = field(default_factory=list)
    instances_sent: int = 0
    encode_seconds: float = 0.0
    # called after each instance with (instances sent, bytes fetched); may raise to stop
    on_instance: Callable[[int, int], None] | None = None
    # called with each instance's bytes as they are sent (to keep its header); None: not kept
    on_data: Callable[[bytes], None] | None = None
    _between: bytearray = field(
        default_factory=bytearray, init=False, repr=False
    )  # not yielded yet

    def __iter__(self) -> Iterator[bytes]:
        pending = iter(self.streams)  # one stream per leaf, in the order the body needs them
        try:
            yield from self._emit(self.plan, pending)
            if self._between:
                yield self._flush()
        finally:
            self.close()

    @property
    def headers(self) -> dict[str, str]:
        """The headers of the POST that carries this body: its Content-Type, and any context
        the body itself does not carry."""
        return dict(JSON_HEADERS)

    @classmethod
    def open(cls, plan: InputPlan, source: DicomWebSource, **fields: Any) -> Self:
        """Open every retrieve the plan needs; raise our errors (not found, auth) before any
        byte. ``fields`` are the subclass's own."""
        body = cls(plan, **fields)
        try:
            for leaf in _leaves(plan):
                if isinstance(leaf, SingleInstance):
                    stream = source.retrieve(leaf.study_uid, leaf.series_uid, leaf.instance_uid)
                elif leaf.series_uid is None and (leaf.skip_modalities or leaf.skip_series):
                    stream = source.retrieve_study(
                        leaf.study_uid, leaf.skip_modalities, leaf.skip_series
                    )
                else:
                    stream = source.retrieve(leaf.study_uid, leaf.series_uid)
                body.streams.append(stream)
        except BaseException:
            body.close()
            raise
        return body

    @property
    def bytes_fetched(self) -> int:
        return sum(stream.bytes_read for stream in self.streams)

    @property
    def fetch_seconds(self) -> float:
        return sum(stream.read_seconds for stream in self.streams)

    def _write(self, json_text: bytes) -> None:
        self._between += json_text

    def _flush(self) -> bytes:
        chunk = bytes(self._between)
        self._between.clear()
        return chunk

    def _instance(self, data: bytes) -> Iterator[bytes]:
        """The instance's JSON string: its texts yielded (after the JSON before them), the time
        spent encoding counted."""
        self._sent(data)
        pieces = iter_instance_string(data)
        for index in itertools.count():
            started = time.perf_counter()
            piece = next(pieces, None)
            self.encode_seconds += time.perf_counter() - started
            if piece is None:
                return
            if index % 2 == 0:
                self._write(piece)
                continue
            if self._between:
                yield self._flush()
            yield piece

    def close(self) -> None:
        for stream in self.streams:
            stream.close()

    def _sent(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)
        self.instances_sent += 1
        if self.on_instance is not None:
            self.on_instance(self.instances_sent, self.bytes_fetched)

    def _emit(self, plan: InputPlan, pending: Iterator[InstanceStream]) -> Iterator[bytes]:
        if isinstance(plan, Keyed):
            self._write(b"{")
            for index, (key, inner) in enumerate(plan.entries):
                self._write((b"," if index else b"") + json.dumps(key).encode() + b':{"data":')
                yield from self._emit(inner, pending)
                self._write(b"}")
            self._write(b"}")
            return
        stream = next(pending)
        if isinstance(plan, SingleInstance):
            for data in stream:  # exactly one part
                yield from self._instance(data)
                break
            return
        self._write(b"[")
        for index, data in enumerate(stream):
            if index:
                self._write(b",")
            yield from self._instance(data)
        self._write(b"]")


def open_model_body(plan: InputPlan, source: DicomWebSource) -> ModelBody:
    """The JSON body of the plan, its retrieves opened (see :meth:`ModelBody.open`)."""
    return ModelBody.open(plan, source)


def _leaves(plan: InputPlan) -> Iterator[InstanceList | SingleInstance]:
    if isinstance(plan, Keyed):
        for _, inner in plan.entries:
            yield from _leaves(inner)
    else:
        yield plan
