"""Storing a job's DICOM objects into the PACS (STOW-RS) at its end, and what the job records.

The objects go with one STOW-RS request through the session of the model's ``store.server``
(default: the request's server) into the source study. A transient failure (the PACS away for
a moment, a 502/503/504) is tried again as the worker's :class:`~workers.retry.RetryPolicy` says,
within the job's deadline; any other failure (refused, wrong credentials, the deadline reached)
is recorded. Storing never fails the job: the answer and the objects are kept all the same, and
the job's ``outputs`` say per object whether the PACS stored it, ``storeError`` why not.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pydicom

from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.dicomweb.stow import StoreResult, store_instances
from model_proxy.shared.errors import InternalError, ModelProxyError
from model_proxy.shared.jobs import JobError, JobOutput
from model_proxy.workers.retry import RetryPolicy

__all__ = ["StoredObjects", "describe_objects", "store_objects"]

log = logging.getLogger(__name__)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True)
class StoredObjects:
    """What became of each object (in the job's ``outputs``) and why any was not stored."""

    outputs: tuple[JobOutput, ...]
    error: JobError | None = None


def describe_objects(objects: Mapping[str, bytes], server_id: str) -> tuple[JobOutput, ...]:
    """The ``outputs`` entries of ``objects`` (SOP Instance UID -> Part-10 file), none stored
    yet."""
    return tuple(_output(data, server_id) for data in objects.values())


def store_objects(
    job_id: str,
    objects: Mapping[str, bytes],
    source: DicomWebSource,
    study_uid: str,
    policy: RetryPolicy,
    time_left: Callable[[], float],
    wait: Callable[[float], object],
) -> StoredObjects:
    """Store ``objects`` on ``source``'s server into ``study_uid``; transient failures are
    retried while ``time_left()`` allows (``wait`` sleeps between tries)."""
    outputs = describe_objects(objects, source.server_id)
    if not objects:
        return StoredObjects(outputs)
    tries, waited = 1, 0.0
    while True:
        try:
            result = store_instances(source, list(objects.values()), study_uid)
            break
        except ModelProxyError as error:
            delay = policy.delay_before_retry(error, tries, waited, time_left())
            if delay is None:
                return _not_stored(job_id, outputs, error)
            log.warning(
                "job=%s stage=stow retry=%d error=%s wait_s=%.3f", job_id, tries, error.code, delay
            )
            wait(delay)
            tries, waited = tries + 1, waited + delay
        except Exception:
            log.exception("job=%s stage=stow unexpected failure", job_id)
            unexpected = InternalError("storing the objects failed unexpectedly; see the log")
            return _not_stored(job_id, outputs, unexpected)
    return _recorded(job_id, outputs, result)


def _recorded(job_id: str, outputs: tuple[JobOutput, ...], result: StoreResult) -> StoredObjects:
    confirmed = {item.sop_instance_uid for item in result.stored}
    marked = tuple(
        output.model_copy(update={"stored": output.sop_instance_uid in confirmed})
        for output in outputs
    )
    failure = result.error()
    log.info(
        "job=%s stage=stow status=%d stored=%d of %d",
        job_id,
        result.status,
        sum(output.stored for output in marked),
        len(marked),
    )
    if failure is None:
        return StoredObjects(marked)
    return StoredObjects(marked, JobError(code=failure.code, message=failure.message))


def _not_stored(
    job_id: str, outputs: tuple[JobOutput, ...], error: ModelProxyError
) -> StoredObjects:
    log.warning("job=%s stage=stow not stored: %s", job_id, error.code)
    return StoredObjects(outputs, JobError(code=error.code, message=error.message))


def _output(data: bytes, server_id: str) -> JobOutput:
    header = pydicom.dcmread(
        io.BytesIO(data),
        stop_before_pixels=True,
        specific_tags=[
            "SOPClassUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "ReferencedSeriesSequence",
        ],
    )
    sop_class = _uid(header, "SOPClassUID")
    source_series = None
    if sop_class == SEGMENTATION_STORAGE:
        referenced = header.get("ReferencedSeriesSequence") or []
        if len(referenced) == 1:
            source_series = _uid(referenced[0], "SeriesInstanceUID")
    return JobOutput(
        format="seg" if sop_class == SEGMENTATION_STORAGE else "sr",
        sop_class_uid=sop_class,
        series_instance_uid=_uid(header, "SeriesInstanceUID"),
        sop_instance_uid=_uid(header, "SOPInstanceUID"),
        source_series_instance_uid=source_series,
        server=server_id,
    )


def _uid(header: pydicom.Dataset, keyword: str) -> str | None:
    value = header.get(keyword)
    return str(value) if value else None
