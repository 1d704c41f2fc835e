"""The DICOM objects a job's answer becomes at its end, for a model whose models.json entry has
``store``: a SEG per series a segmentation answer segments, a TID 1500 SR from an annotation
or prediction answer (and from a segmentation answer's ``metadata``).

Building never fails the job: what cannot be built is reported beside the objects that were
(``outputError`` of the job), and the answer is stored all the same. The objects of a job
together are at most ``MODEL_PROXY_MAX_RESULT_OBJECT_BYTES``: one that would pass it is not kept.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    """The objects made (SOP Instance UID -> DICOM file bytes) and why any asked for was not."""

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
    headers of the instances it was sent; at most ``max_bytes`` together as DICOM files."""
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
            for dataset in _build(kind, model.task, document, sources, identity, errors):
                data = _file(dataset, kind, max_bytes - sum(map(len, objects.values())))
                objects[str(dataset.SOPInstanceUID)] = data
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
    errors: list[ModelProxyError],
) -> Iterator[Dataset]:
    """The objects of ``kind``: a SEG per segmented series (one that cannot be made is
    reported in ``errors`` and the others are made), or the one SR."""
    if kind is ResultObject.SEG:
        for series_uid in _segmented_series(document):
            series = [ds for ds in sources if str(ds.get("SeriesInstanceUID", "")) == series_uid]
            try:
                yield segmentation_to_seg(document, series, identity)
            except UnconvertibleAnswer as error:
                errors.append(error)
        return
    annotated = task is Task.ANNOTATION and any("rois" in f.frame for f in frames(document))
    if not annotated and next(metadata_entries(document), None) is None:
        raise UnconvertibleAnswer("the answer has no ROI and no metadata entry to report")
    builder: _Builder = annotations_to_sr if task is Task.ANNOTATION else predictions_to_sr
    yield builder(document, sources, identity)


def _segmented_series(document: Mapping[str, Any]) -> list[str]:
    """The series the answer segments, in the answer's order."""
    series = {found.series_uid: None for found in frames(document) if "segments" in found.frame}
    if not series:
        raise UnconvertibleAnswer("the answer segments no instance")
    return list(series)


def _file(dataset: Dataset, kind: ResultObject, room: int) -> bytes:
    """The object as a DICOM file, when it fits in the ``room`` the job's objects have left."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    if len(data) > room:
        raise UnconvertibleAnswer(
            f"the {kind.value} object is {len(data)} bytes, over the {max(room, 0)} bytes left "
            "of the cap of the job's objects (MODEL_PROXY_MAX_RESULT_OBJECT_BYTES)"
        )
    return data
