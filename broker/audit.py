"""The audit log: one JSON line per access to patient-derived data, and per refused attempt.

An access is a request to a viewer's route (a result made, shared or served from the cache), to
``GET /jobs``, ``GET /jobs/{id}``, ``GET /jobs/{id}/result`` or ``DELETE /jobs/{id}``, whatever
its outcome: a 401, 403 or 429 is recorded as well, so failed attempts can be seen. A listing
shows many jobs: it gets one line per job listed (each with the job's study, as a line of a
read does), or one line with ``jobs`` 0 when it listed none. Other routes (probes, status,
metrics) are not recorded.

:class:`AuditAccess`, an ASGI middleware outside authentication, writes the line when the
response's status is known and before the response leaves: a line that cannot be written turns
an answer with data into 503 ``audit_unavailable`` (fail closed: nothing is served that the log
does not show), logs an error on the service log and counts ``audit_failures`` in ``/metrics``.
Routes add what only they know (job id, model, server, study) with :func:`note_job`,
:func:`note_inference` and :func:`note_listing`; the rest comes from the request (principal,
client, route template, path parameters; a result read's ``format``). A line never holds a
credential, a data filter's value nor the model's answer.

:class:`AuditLog` is the sink (``MODEL_PROXY_AUDIT_LOG``): standard output (``stdout`` or
``-``), which the service log (standard error) never uses, or a file opened for each line with
``O_APPEND`` (created with mode 0600) and written with one ``write``, so several API processes
may share it and a rotation by renaming or truncating the file loses no line. It does not go
through :mod:`logging`, whose handlers swallow write errors.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_proxy.broker.errors import error_response
from model_proxy.shared.errors import AuditUnavailable, ConfigError
from model_proxy.shared.jobs import Job
from model_proxy.shared.request import InferenceRequest

__all__ = [
    "FIELDS",
    "AuditAccess",
    "AuditLog",
    "note",
    "note_inference",
    "note_job",
    "note_listing",
]

log = logging.getLogger(__name__)

FIELDS = (
    "time",
    "event",
    "status",
    "error",
    "principal",
    "principalKind",
    "client",
    "method",
    "route",
    "jobId",
    "jobs",
    "source",
    "model",
    "server",
    "study",
    "series",
    "instance",
    "format",
)
"""Every line has these keys, in this order (``null`` when the request did not say)."""

_RESULT = "job.result"  # its line names the format served: json, seg or sr
# Route name (or tag) -> event. The viewer's routes share the tag "inference".
_EVENTS = {
    "list_jobs": "jobs.list",
    "get_job": "job.read",
    "get_result": _RESULT,
    "cancel_job": "job.cancel",
    "submit_job": "job.submit",
}
_INFERENCE_TAG = "inference"
_PATH_FIELDS = {"model": "model", "study": "study", "series": "series", "instance": "instance"}
_MAX_TEXT = 128  # UIDs have at most 64 characters; longer values are someone's noise
_MAX_ERROR_BODY = 16 * 1024
_STDOUT = ("stdout", "-")
_LISTED = "_listed"  # the fields of each job a listing showed; never a field of a line

_CURRENT: ContextVar[dict[str, Any] | None] = ContextVar("model_proxy_audit", default=None)


def note(**fields: object) -> None:
    """Add fields to the audit line of the request being answered (nothing outside one)."""
    current = _CURRENT.get()
    if current is not None:
        current.update({name: _text(value) for name, value in fields.items()})


def note_inference(request: InferenceRequest, job_id: str, source: str | None = None) -> None:
    """The request's job and what it names; ``source``: ``created``, ``attached`` or ``cache``
    (how a viewer's route answered)."""
    note(source=source, **_job_fields(request, job_id))


def note_job(job: Job) -> None:
    """The job a ``/jobs/{id}`` route read, and what it names."""
    note_inference(job.request, job.id)


def note_listing(jobs: Sequence[Job]) -> None:
    """The jobs a listing showed: its line becomes one line per job (``jobs``: how many)."""
    current = _CURRENT.get()
    if current is not None:
        current["jobs"] = len(jobs)
        current[_LISTED] = [_job_fields(job.request, job.id) for job in jobs]


def _job_fields(request: InferenceRequest, job_id: str) -> dict[str, Any]:
    fields = {
        "jobId": job_id,
        "model": request.model_id,
        "server": request.server_id,
        "study": request.study_uid,
        "series": request.series_uid,
        "instance": request.instance_uid,
    }
    return {name: _text(value) for name, value in fields.items()}


class AuditLog:
    """Where the lines go: ``stdout`` (or ``-``), or a file path."""

    def __init__(self, target: str | Path) -> None:
        text = str(target).strip()
        self._path = None if text in _STDOUT else Path(text)

    @property
    def target(self) -> str:
        return "stdout" if self._path is None else str(self._path)

    def check(self) -> None:
        """Create the file (mode 0600) now, so a path that cannot be written stops the start."""
        if self._path is None:
            return
        try:
            os.close(self._open())
        except OSError as exc:
            raise ConfigError(
                f"MODEL_PROXY_AUDIT_LOG: cannot append to {self._path}: {exc.strerror}"
            ) from None

    def record(self, *entries: Mapping[str, object]) -> None:
        """Append one line per entry, all in one write; raise OSError when they could not be
        written."""
        line = b"".join(
            (json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
            for entry in entries
        )
        if self._path is None:
            _write(1, line)
            return
        fd = self._open()
        try:
            _write(fd, line)
        finally:
            os.close(fd)

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self._path or "", flags, 0o600)


def _write(fd: int, line: bytes) -> None:
    # one write for the whole line: O_APPEND places it at the end at once, so lines of
    # concurrent writers do not interleave; loop only if the system wrote part of it
    view = memoryview(line)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class AuditAccess:
    """ASGI middleware: one audit line per request to a route that serves patient-derived data."""

    def __init__(
        self,
        app: ASGIApp,
        audit: AuditLog,
        routes: Iterable[BaseRoute],
        default_server: str | None = None,
    ) -> None:
        """``routes``: the API's routes that may be audited; those with an event are.
        ``default_server``: the servers.json key a viewer's request without ``?server`` means
        (its line names it, even when the request is refused before a route sees it)."""
        self._app = app
        self._audit = audit
        self._routes = [(route, event) for route in routes if (event := _event(route))]
        self._default_server = default_server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self._entry(scope) if scope["type"] == "http" else None
        if entry is None:
            await self._app(scope, receive, send)
            return
        exchange = _Exchange(self._audit, scope, receive, send, entry)
        token = _CURRENT.set(entry)
        try:
            await self._app(scope, receive, exchange.send)
        except BaseException:
            exchange.finish(500)
            raise
        finally:
            _CURRENT.reset(token)
        exchange.finish(499)  # only if no answer went out: the client went away

    def _entry(self, scope: Scope) -> dict[str, Any] | None:
        """The line of an audited request, as far as the request tells; None: not audited."""
        for route, event in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                entry = _new_entry(scope, route, event, child.get("path_params", {}))
                if event == "inference" and not entry["server"]:
                    entry["server"] = self._default_server
                return entry
        return None


class _Exchange:
    """One audited request's answer: its line is written before the answer leaves."""

    def __init__(
        self, audit: AuditLog, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any]
    ) -> None:
        self._audit = audit
        self._scope = scope
        self._receive = receive
        self._send = send
        self._entry = entry
        self._held: list[Message] = []  # an error answer, until its body (and code) is known
        self._recorded = False
        self._withheld = False

    async def send(self, message: Message) -> None:
        if self._withheld:
            return  # answered 503 instead: the original's body is dropped
        if self._recorded:
            await self._send(message)
            return
        if message["type"] == "http.response.start" and message["status"] < 400:
            self._entry["status"] = message["status"]
            if self._record():
                await self._send(message)
            else:  # fail closed: no data leaves unrecorded
                self._withheld = True
                await _refuse(self._scope, self._receive, self._send)
            return
        self._held.append(message)
        body = b"".join(m.get("body", b"") for m in self._held[1:])
        more = message["type"] == "http.response.start" or message.get("more_body", False)
        if more and len(body) < _MAX_ERROR_BODY:
            return
        self._entry["status"] = self._held[0]["status"]
        self._entry["error"] = _error_code(body)
        self._record()  # an error answer carries no data: it goes out either way
        for held in self._held:
            await self._send(held)

    def finish(self, status: int) -> None:
        """Record the request that ended without a complete answer, as ``status``."""
        if not self._recorded:
            self._entry["status"] = self._held[0]["status"] if self._held else status
            self._record()

    def _record(self) -> bool:
        self._recorded = True
        entry = self._entry
        entry["principal"], entry["principalKind"] = _principal(self._scope)
        listed = entry.pop(_LISTED, None)
        try:
            self._audit.record(*([{**entry, **job} for job in listed] if listed else [entry]))
            return True
        except OSError as exc:
            log.error(
                "audit log: a %s line could not be written to %s (%s)",
                entry["event"],
                self._audit.target,
                exc.strerror or type(exc).__name__,
            )
            services = getattr(self._scope["app"].state, "services", None)
            if services is not None:
                services.metrics.add("audit_failures", {"event": entry["event"]})
            return False


def _event(route: BaseRoute) -> str | None:
    event = _EVENTS.get(getattr(route, "name", ""))
    if event is None and _INFERENCE_TAG in getattr(route, "tags", ()):
        event = "inference"
    return event


def _new_entry(
    scope: Scope, route: BaseRoute, event: str, params: Mapping[str, object]
) -> dict[str, Any]:
    entry: dict[str, Any] = dict.fromkeys(FIELDS)
    client = scope.get("client")
    entry.update(
        time=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        event=event,
        client=client[0] if client else None,
        method=scope["method"],
        route=getattr(route, "path", None),
        jobId=_text(params.get("job_id")),
    )
    for param, field in _PATH_FIELDS.items():
        entry[field] = _text(params.get(param))
    if event == "inference":
        entry["server"] = _text(_query_value(scope, "server"))
    if event == _RESULT:
        entry["format"] = _text(_query_value(scope, "format") or "json")
    return entry


def _principal(scope: Scope) -> tuple[str | None, str | None]:
    principal = scope.get("state", {}).get("principal")
    if principal is None:
        return None, None
    return _text(principal.name), principal.kind


def _query_value(scope: Scope, name: str) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    return next((value for key, value in parse_qsl(query) if key == name), None)


def _text(value: object) -> Any:
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return value[:_MAX_TEXT] + "..."
    return value


def _error_code(body: bytes) -> str | None:
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return _text(code) if isinstance(code, str) else None


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    answer = error_response(
        AuditUnavailable("the access could not be recorded in the audit log; try again later")
    )
    await answer(scope, receive, send)
