"""``POST /jobs``: a request as a JSON document rather than a viewer's URL, and the headers that
say how it wants its answer.

The body names the request as the job resource's ``request`` does (``task``, ``model``,
``server``, ``study``, ``series``, ``instance``, ``dataFilters``) plus ``fresh``; the level
follows from which UIDs are given. It is read within ``MODEL_PROXY_SUBMIT_MAX_BODY_BYTES`` (413
``body_too_large``), only as JSON (415 ``unsupported_media_type``), with no field but these (422
``invalid_request``); then :func:`~model_proxy.broker.validation.build_request` checks it as it
checks a viewer's URL, with the same error codes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model_proxy.broker.validation import ViewerPath
from model_proxy.shared.config import Task
from model_proxy.shared.datafilters import MAX_FILTERS
from model_proxy.shared.errors import BodyTooLarge, UnsupportedMediaType
from model_proxy.shared.webhooks.urls import MAX_URL_LENGTH

__all__ = ["JobSubmission", "prefer_wait", "read_submission"]

_TASKS = {name: task for task in Task for name in (task.value, task.route_prefix)}
_NAME_LENGTH = 128  # a model's or a server's key
_UID_LENGTH = 128  # longer than any UID: a UID too long is refused as `invalid_uid`

TaskName = Literal[
    "segmentations", "annotations", "predictions", "segmentation", "annotation", "prediction"
]


class JobSubmission(BaseModel):
    """The body of ``POST /jobs``. ``task`` is the viewer's route (``segmentations``, ...) or
    the task as the job resource names it (``segmentation``, ...); ``server`` absent: the
    default server; ``series`` and ``instance`` absent: the whole study, or series; ``fresh``:
    run the model again rather than answer from the stored answer of an identical request (as
    ``Cache-Control: no-cache`` on the viewer's routes); ``callback``: a webhook for when the job
    ends (as the viewer's routes' ``callback`` query parameter)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    task: TaskName
    model: str = Field(min_length=1, max_length=_NAME_LENGTH)
    server: str | None = Field(default=None, min_length=1, max_length=_NAME_LENGTH)
    study: str = Field(min_length=1, max_length=_UID_LENGTH)
    series: str | None = Field(default=None, min_length=1, max_length=_UID_LENGTH)
    instance: str | None = Field(default=None, min_length=1, max_length=_UID_LENGTH)
    data_filters: list[Any] | None = Field(
        default=None,
        alias="dataFilters",
        max_length=MAX_FILTERS,
        description="`[{dataKey, uuid, dataFilter?}]`, as the `data-filters` query parameter "
        "of the viewer's routes; read at study and series level",
    )
    fresh: bool = False
    callback: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="A URL POSTed the job, signed, when it ends (a webhook); its origin must be "
        "among `MODEL_PROXY_CALLBACK_ORIGINS`, else 422 `callback_not_allowed`",
    )

    @model_validator(mode="after")
    def _instance_needs_series(self) -> JobSubmission:
        if self.instance is not None and self.series is None:
            raise ValueError("an instance needs its series")
        return self

    @property
    def inference_task(self) -> Task:
        return _TASKS[self.task]

    @property
    def path(self) -> ViewerPath:
        """What a viewer's route would name for this request."""
        return ViewerPath(self.model, self.study, self.series, self.instance, self.server)

    def fingerprint(self) -> str:
        """A digest of the body as read: field order, spacing and the spelling of ``task`` do
        not change it, nor does a field given with its default value."""
        canonical = self.model_dump(mode="json", by_alias=True)
        canonical["task"] = self.inference_task.value
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


async def read_submission(request: Request, max_bytes: int) -> JobSubmission:
    """The request's body as a :class:`JobSubmission`; our errors (413, 415) or a
    :class:`RequestValidationError` (422 ``invalid_request``) otherwise."""
    _check_media_type(request.headers.get("content-type"))
    body = await _read_body(request, max_bytes)
    try:
        return JobSubmission.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in problems]
        ) from None


def _check_media_type(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType("send the request as JSON (Content-Type: application/json)")


async def _read_body(request: Request, max_bytes: int) -> bytes:
    too_large = BodyTooLarge(f"the request body is larger than {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


def prefer_wait(prefer: str | None, limit: float) -> int | None:
    """The seconds ``Prefer: wait=N`` (RFC 7240) asks to wait for, at most ``limit``; ``None``
    when it asks for no wait (a preference not understood is ignored, as the RFC says)."""
    for item in (prefer or "").split(","):
        name, _, value = item.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if value.isascii() and value.isdigit() and len(value) <= 9:
            return min(int(value), int(limit))
    return None
