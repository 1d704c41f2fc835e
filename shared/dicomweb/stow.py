"""STOW-RS: store DICOM Part-10 files into a PACS, and what its answer says of each one.

:func:`store_instances` posts the files as one ``multipart/related; type="application/dicom"``
body to ``{dicomweb}/studies`` (or ``/studies/{study}``) through the server's
:class:`~model_proxy.shared.dicomweb.source.DicomWebSource`: its session, auth (renewed and sent
once more when refused), timeouts and error translation. The PACS answers (PS3.18 10.5.3) 200 when
it stored every instance, 202 when it stored some or stored with warnings, 409 when it stored none
(Orthanc: when any failed); each of these comes back as a :class:`StoreResult` listing the
instances stored, those refused with their FailureReason, and those the answer does not mention.
So does any other 4xx whose body is a store answer naming instances (Orthanc answers 400 with the
instances it stored when a part is not DICOM). Anything else raises (``pacs_auth_failed``,
``pacs_store_failed``; 502/503/504 transient).

:func:`encode_store_body` and :func:`parse_store_response` are the I/O-free codecs.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydicom
import requests
from pydicom.errors import InvalidDicomError

from model_proxy.shared.dicomweb.multipart import dicom_body_chunks
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.errors import PacsAuthFailed, PacsStoreFailed

__all__ = [
    "STORE_ACCEPT",
    "STORE_CONTENT_TYPE",
    "FailedInstance",
    "StoreResult",
    "StoredInstance",
    "encode_store_body",
    "parse_store_response",
    "store_instances",
]

STORE_CONTENT_TYPE = 'multipart/related; type="application/dicom"'
STORE_ACCEPT = "application/dicom+json"

_FAILURE_REASON = "00081197"
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_WARNING_REASON = "00081196"
_RETRIEVE_URL = "00081190"
_SOP_CLASS = "00081150"
_SOP_INSTANCE = "00081155"
_ANSWERED = (200, 202, 409)  # the statuses whose body says, per instance, what was stored
_CHUNK = 64 * 1024

_REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


@dataclass(frozen=True)
class StoredInstance:
    """An instance the PACS stored (ReferencedSOPSequence); ``warning`` its WarningReason."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    retrieve_url: str | None = None
    warning: int | None = None


@dataclass(frozen=True)
class FailedInstance:
    """An instance the PACS refused (FailedSOPSequence), with its FailureReason when given."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    reason: int | None = None

    def describe(self) -> str:
        """``<SOP Instance UID> (0xA900 data set does not match SOP class)``."""
        if self.reason is None:
            return f"{self.sop_instance_uid} (no reason given)"
        meaning = _REASONS.get(self.reason, "refused")
        return f"{self.sop_instance_uid} (0x{self.reason:04X} {meaning})"


@dataclass(frozen=True)
class StoreResult:
    """What one STOW-RS request stored on ``server_id`` (``status``: its HTTP status).

    ``unconfirmed`` are the SOP Instance UIDs sent that the answer names neither as stored nor
    as failed (None for a file without a readable SOP Instance UID)."""

    server_id: str
    status: int
    stored: tuple[StoredInstance, ...]
    failed: tuple[FailedInstance, ...]
    unconfirmed: tuple[str | None, ...] = ()

    @property
    def ok(self) -> bool:
        """Every instance sent was stored."""
        return not self.failed and not self.unconfirmed

    def error(self) -> PacsStoreFailed | None:
        """``pacs_store_failed`` naming the instances not stored; None when all were."""
        if self.ok:
            return None
        refused = [item.describe() for item in self.failed]
        refused += [
            f"{uid} (not in the answer)" if uid else "a file that is not DICOM"
            for uid in self.unconfirmed
        ]
        return PacsStoreFailed(
            f"server {self.server_id} did not store {len(refused)} of "
            f"{len(self.stored) + len(refused)} instances (HTTP {self.status}): "
            + "; ".join(refused),
            status=self.status,
        )

    def raise_for_failures(self) -> None:
        error = self.error()
        if error is not None:
            raise error


def store_instances(
    source: DicomWebSource, instances: Sequence[bytes], study_uid: str | None = None
) -> StoreResult:
    """Store Part-10 ``instances`` on ``source``'s server with one STOW-RS request, into
    ``study_uid`` when given (the PACS refuses an instance of another study).

    The answer is read up to the source's instance cap (no cap without limits)."""
    if not instances:
        raise ValueError("nothing to store")
    boundary = f"model-proxy-{uuid.uuid4().hex}"
    path = "/studies" if study_uid is None else f"/studies/{study_uid}"
    response = source.post(
        path,
        encode_store_body(instances, boundary),
        f"{STORE_CONTENT_TYPE}; boundary={boundary}",
        STORE_ACCEPT,
    )
    sent = [_sop_instance_uid(data) for data in instances]
    try:
        status = response.status_code
        if status in (401, 403):
            raise PacsAuthFailed(
                f"server {source.server_id} refused the store (HTTP {status}); "
                "check its authType and credentials in servers.json"
            )
        body = b""
        if status < 500:
            limit = source.limits.instance if source.limits is not None else None
            with source.translate_errors():
                body = _read_capped(response, limit, source.server_id)
    finally:
        response.close()
    stored, failed = parse_store_response(body)
    if status not in _ANSWERED and not stored and not failed:
        named = ", ".join(uid or "a file that is not DICOM" for uid in sent)
        raise PacsStoreFailed(
            f"server {source.server_id} refused the store (HTTP {status}) of "
            f"{len(sent)} instances: {named}",
            status=status,
        )
    answered = {item.sop_instance_uid for item in stored}
    answered |= {item.sop_instance_uid for item in failed}
    if status == 409 and not stored and not failed:
        # refused, with a body that names no instance: every one failed, reason unknown
        failed = tuple(FailedInstance(None, uid) for uid in sent)
        answered |= set(sent)
    unconfirmed = tuple(uid for uid in sent if uid is None or uid not in answered)
    return StoreResult(source.server_id, status, stored, failed, unconfirmed)


def encode_store_body(instances: Sequence[bytes], boundary: str) -> bytes:
    """The ``multipart/related`` body of a STOW-RS request: one ``application/dicom`` part
    per file, as it is."""
    return b"".join(dicom_body_chunks(((data, {}) for data in instances), boundary))


def parse_store_response(
    body: bytes,
) -> tuple[tuple[StoredInstance, ...], tuple[FailedInstance, ...]]:
    """The instances a STOW-RS answer (DICOM JSON, PS3.18 Table 10.5.3-1) says were stored
    and refused. An empty body or one that is not DICOM JSON names none."""
    try:
        answer = json.loads(body) if body.strip() else {}
    except ValueError:
        return (), ()
    if isinstance(answer, list):  # some servers wrap the one dataset in an array
        answer = answer[0] if answer and isinstance(answer[0], dict) else {}
    if not isinstance(answer, dict):
        return (), ()
    stored = tuple(
        StoredInstance(
            _text(item, _SOP_CLASS),
            _text(item, _SOP_INSTANCE),
            _text(item, _RETRIEVE_URL),
            _number(item, _WARNING_REASON),
        )
        for item in _items(answer, _REFERENCED_SOP_SEQUENCE)
    )
    failed = tuple(
        FailedInstance(
            _text(item, _SOP_CLASS), _text(item, _SOP_INSTANCE), _number(item, _FAILURE_REASON)
        )
        for item in _items(answer, _FAILED_SOP_SEQUENCE)
    )
    return stored, failed


def _items(dataset: Mapping[str, Any], tag: str) -> Iterator[Mapping[str, Any]]:
    element = dataset.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    for item in values if isinstance(values, list) else []:
        if isinstance(item, dict):
            yield item


def _value(item: Mapping[str, Any], tag: str) -> object:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _text(item: Mapping[str, Any], tag: str) -> str | None:
    value = _value(item, tag)
    return value if isinstance(value, str) and value else None


def _number(item: Mapping[str, Any], tag: str) -> int | None:
    value = _value(item, tag)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sop_instance_uid(data: bytes) -> str | None:
    """The SOP Instance UID of a Part-10 file; None when it cannot be read."""
    try:
        dataset = pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
        )
    except (InvalidDicomError, ValueError, EOFError, OSError, AttributeError, KeyError):
        return None
    uid = dataset.get("SOPInstanceUID")
    return str(uid) if uid else None


def _read_capped(response: requests.Response, limit: int | None, server_id: str) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=_CHUNK):
        body += chunk
        if limit is not None and len(body) > limit:
            raise PacsStoreFailed(
                f"server {server_id} answered the store with more than {limit} bytes",
                status=response.status_code,
            )
    return bytes(body)
