"""The DICOM objects a job's answer becomes at its end, for a model whose models.json entry has
``store``: a SEG from a segmentation answer, a TID 1500 SR from an annotation or prediction
answer (and from a segmentation answer's ``metadata``).

Building never fails the job: what cannot be built is reported beside the objects that were
(``outputError`` of the job), and the answer is stored all the same.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from model_proxy.shared.config import ModelConfig, ResultObject, Task
from model_proxy.shared.dicom_results import (
    ModelIdentity,
    annotations_to_sr,
    identity_of,
    predictions_to_sr,
    segmentation_to_seg,
)
from model_proxy.shared.dicom_results.answers import frames, metadata_entries
from model_proxy.shared.errors import InternalError, ModelProxyError, UnconvertibleAnswer
from model_proxy.shared.jobs import JobError

__all__ = ["ResultObjects", "build_result_objects"]

log = logging.getLogger(__name__)

_Builder = Callable[[Mapping[str, Any], Sequence[Dataset], ModelIdentity], Dataset]


@dataclass(frozen=True)
class ResultObjects:
    """The objects made (format -> DICOM file bytes) and why any asked for was not."""

    objects: dict[str, bytes] = field(default_factory=dict)
    error: JobError | None = None


def build_result_objects(
    job_id: str,
    answer: bytes,
    sources: Sequence[Dataset],
    model_id: str,
    model: ModelConfig,
    max_bytes: int,
    header_problem: str | None = None,
) -> ResultObjects:
    """The objects ``model.store`` asks for, made from the model's JSON ``answer`` and the
    headers of the instances it was sent; each at most ``max_bytes`` as a DICOM file."""
    if model.store is None:
        return ResultObjects()
    objects: dict[str, bytes] = {}
    errors: list[ModelProxyError] = []
    try:
        if header_problem is not None:
            raise UnconvertibleAnswer(header_problem)
        document = _document(answer)
    except UnconvertibleAnswer as error:
        return ResultObjects(error=JobError(code=error.code, message=error.message))
    identity = identity_of(model_id, model)
    for kind in model.store.objects:
        try:
            dataset = _build(kind, model.task, document, sources, identity)
            objects[kind.value] = _file(dataset, kind, max_bytes)
        except UnconvertibleAnswer as error:
            errors.append(error)
        except Exception:
            log.exception("job=%s stage=objects %s could not be built", job_id, kind.value)
            errors.append(InternalError(f"the {kind.value} object could not be built"))
    if not errors:
        return ResultObjects(objects)
    first = errors[0]
    return ResultObjects(objects, JobError(code=first.code, message=first.message))


def _document(answer: bytes) -> Mapping[str, Any]:
    try:
        document = json.loads(answer)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnconvertibleAnswer("the model's answer is not JSON") from None
    if not isinstance(document, Mapping):
        raise UnconvertibleAnswer("the model's answer is not a JSON object")
    return document


def _build(
    kind: ResultObject,
    task: Task,
    document: Mapping[str, Any],
    sources: Sequence[Dataset],
    identity: ModelIdentity,
) -> Dataset:
    if kind is ResultObject.SEG:
        return segmentation_to_seg(document, _segmented_series(document, sources), identity)
    annotated = task is Task.ANNOTATION and any("rois" in f.frame for f in frames(document))
    if not annotated and next(metadata_entries(document), None) is None:
        raise UnconvertibleAnswer("the answer has no ROI and no metadata entry to report")
    builder: _Builder = annotations_to_sr if task is Task.ANNOTATION else predictions_to_sr
    return builder(document, sources, identity)


def _segmented_series(document: Mapping[str, Any], sources: Sequence[Dataset]) -> list[Dataset]:
    """The sources of the one series the answer segments (one SEG per job so far)."""
    series = {found.series_uid for found in frames(document) if "segments" in found.frame}
    if not series:
        raise UnconvertibleAnswer("the answer segments no instance")
    if len(series) > 1:
        raise UnconvertibleAnswer(
            f"the answer segments {len(series)} series; a job makes one segmentation object"
        )
    (series_uid,) = series
    return [ds for ds in sources if str(ds.get("SeriesInstanceUID", "")) == series_uid]


def _file(dataset: Dataset, kind: ResultObject, max_bytes: int) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise UnconvertibleAnswer(
            f"the {kind.value} object is {len(data)} bytes, over the cap of {max_bytes} "
            "(MODEL_PROXY_MAX_RESULT_OBJECT_BYTES)"
        )
    return data
