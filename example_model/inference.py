"""One request, start to end, as plain functions: read the body, then compute the answer.

Both steps are CPU work (JSON decoding, DICOM parsing, pixel maths, serialising masks); the
routes run them in a worker thread so the event loop stays free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from model_proxy.example_model.analysis import analyse
from model_proxy.example_model.body import ModelInput, parse_body
from model_proxy.example_model.documents import Task, build_document
from model_proxy.example_model.instances import Instance, read_instance
from model_proxy.example_model.settings import ExampleModelSettings

__all__ = ["ReceivedBody", "answer", "read_instances", "receive"]


@dataclass(frozen=True)
class ReceivedBody:
    """A decoded request body and its instances, read with pydicom, in body order."""

    model_input: ModelInput
    instances: tuple[Instance, ...]


def receive(raw: bytes) -> ReceivedBody:
    """Decode the body and read every DICOM file in it; raise ``InvalidInput`` if it cannot."""
    return read_instances(parse_body(raw))


def read_instances(model_input: ModelInput) -> ReceivedBody:
    """Read every DICOM file of a decoded body (JSON or multipart) with pydicom."""
    return ReceivedBody(model_input, tuple(read_instance(i) for i in model_input.instances))


def answer(
    task: Task,
    instances: Sequence[Instance],
    settings: ExampleModelSettings,
    *,
    threshold: float | None = None,
    wrap: bool = False,
) -> bytes:
    """The JSON answer of ``task`` for ``instances``.

    With ``wrap`` the document is encoded once more as a JSON string, the way zhiva's reference
    models answer (model-contract §3.1); model-proxy unwraps it.
    """
    findings = [analyse(instance, threshold) for instance in instances]
    document = build_document(task, findings, color=settings.color, class_name=settings.class_name)
    content = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps(content.decode()) if wrap else content
