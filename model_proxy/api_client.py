"""A small client of the model-proxy HTTP API: submit inference jobs, follow them, fetch results.

The caller passes the ``requests.Session`` in. Every error answer, and every failure to reach the
API, becomes one :class:`ApiError` with the API's stable ``code``; messages name the API by its
base URL (without credentials), never the study being asked about.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from model_proxy.shared.jobs import JobError, JobState
from model_proxy.sse import ServerEvent, parse_events

__all__ = [
    "FINISHED_STATES",
    "TASK_ROUTES",
    "Answer",
    "ApiClient",
    "ApiError",
    "JobProgress",
    "JobRequest",
    "JobResource",
    "StreamUnavailable",
]

FINISHED_STATES = frozenset(state.value for state in JobState if state.finished)

# The viewer route of each task: GET /{route}/{model}/studies/...
TASK_ROUTES = {
    "segmentation": "segmentations",
    "annotation": "annotations",
    "prediction": "predictions",
}


class ApiError(Exception):
    """The API answered with an error, or could not be reached (``status`` is then None)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.job_id = job_id


@dataclass(frozen=True)
class JobRequest:
    task: str
    model: str
    server: str | None
    level: str
    study: str
    series: str | None
    instance: str | None


@dataclass(frozen=True)
class JobProgress:
    instances_fetched: int = 0
    instances_total: int | None = None
    bytes_fetched: int = 0
    bytes_total: int | None = None


@dataclass(frozen=True)
class JobResource:
    """A job as ``GET /jobs/{id}`` shows it; ``document`` is the JSON object as received."""

    id: str
    state: str
    request: JobRequest
    progress: JobProgress
    created_at: str
    updated_at: str
    attempts: int
    error: JobError | None
    document: Mapping[str, Any]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> JobResource:
        """Read a job resource, tolerating absent optional fields; KeyError/TypeError if not one."""
        request = document.get("request") or {}
        progress = document.get("progress") or {}
        error = document.get("error")
        job_id, state = document["id"], document["state"]
        if not isinstance(job_id, str) or not isinstance(state, str):
            raise TypeError("id and state must be strings")
        return cls(
            id=job_id,
            state=state,
            request=JobRequest(
                task=str(request.get("task", "")),
                model=str(request.get("model", "")),
                server=request.get("server"),
                level=str(request.get("level", "")),
                study=str(request.get("study", "")),
                series=request.get("series"),
                instance=request.get("instance"),
            ),
            progress=JobProgress(
                instances_fetched=int(progress.get("instancesFetched") or 0),
                instances_total=_optional_int(progress.get("instancesTotal")),
                bytes_fetched=int(progress.get("bytesFetched") or 0),
                bytes_total=_optional_int(progress.get("bytesTotal")),
            ),
            created_at=str(document.get("createdAt", "")),
            updated_at=str(document.get("updatedAt", "")),
            attempts=int(document.get("attempts") or 0),
            error=(
                JobError(code=str(error.get("code", "")), message=str(error.get("message", "")))
                if isinstance(error, Mapping)
                else None
            ),
            document=document,
        )


class Answer(bytes):
    """The model's JSON as received, and the job that made it (the API's ``X-Job-Id``; None
    when the API did not name one)."""

    job_id: str | None = None

    @classmethod
    def of(cls, response: requests.Response) -> Answer:
        answer = cls(response.content)
        answer.job_id = response.headers.get("X-Job-Id")
        return answer


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class StreamUnavailable(Exception):
    """The job's event stream could not be opened or broke off (a proxy that buffers or strips
    ``text/event-stream``, a dropped connection): follow the job by polling instead."""


EVENT_STREAM_TYPE = "text/event-stream"


class ApiClient:
    """The job API of one model-proxy deployment at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        session: requests.Session,
        timeout: float | tuple[float, float] = (10.0, 60.0),
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout
        self.display_url = _without_credentials(self._base_url)

    def submit(
        self,
        task: str,
        model: str,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        *,
        server: str | None = None,
        data_filters: Sequence[object] | None = None,
        fresh: bool = False,
    ) -> JobResource | bytes:
        """Ask for an inference: the new job, or the model's JSON (with the job that made it)
        when a cached answer exists."""
        if task not in TASK_ROUTES:
            raise ValueError(f"unknown task {task!r}")
        segments = [TASK_ROUTES[task], model, "studies", study]
        if series is not None:
            segments += ["series", series]
            if instance is not None:
                segments += ["instances", instance]
        elif instance is not None:
            raise ValueError("an instance needs its series")
        params = {"async": "true"}
        if server is not None:
            params["server"] = server
        if data_filters is not None:
            params["data-filters"] = json.dumps(list(data_filters), separators=(",", ":"))
        headers = {"Cache-Control": "no-cache"} if fresh else {}
        path = "/" + "/".join(quote(segment, safe="") for segment in segments)
        response = self._request("GET", path, params=params, headers=headers)
        if response.status_code == 202:
            return self._job(response)
        return Answer.of(response)

    def job(self, job_id: str) -> JobResource:
        return self._job(self._request("GET", _job_path(job_id)))

    def result(self, job_id: str) -> JobResource | bytes:
        """The model's JSON as received, or the job while it has not finished (202)."""
        response = self._request("GET", _job_path(job_id) + "/result")
        if response.status_code == 202:
            return self._job(response)
        return response.content

    def events(
        self, job_id: str, last_event_id: str | None = None, read_timeout: float | None = None
    ) -> Iterator[tuple[ServerEvent, JobResource]]:
        """The job's server-sent events (``GET /jobs/{id}/events``) and the job each carries,
        until the stream ends (after its ``end`` event). An error answer is :class:`ApiError`;
        an answer that is no event stream, or a stream that breaks or is silent longer than
        ``read_timeout`` (default: the client's), :class:`StreamUnavailable`.
        """
        headers = {"Accept": EVENT_STREAM_TYPE}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        response = self._request(
            "GET",
            _job_path(job_id) + "/events",
            headers=headers,
            stream=True,
            read_timeout=read_timeout,
        )
        with response:
            media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if response.status_code != 200 or media != EVENT_STREAM_TYPE:
                raise StreamUnavailable(f"the API answered {media or 'no content type'}")
            try:
                lines = response.iter_lines(decode_unicode=True)
                for event in parse_events(line for line in lines if line is not None):
                    yield event, self._event_job(event)
            except requests.RequestException as exc:
                raise StreamUnavailable(f"the event stream broke ({type(exc).__name__})") from None

    def _event_job(self, event: ServerEvent) -> JobResource:
        try:
            return JobResource.from_document(json.loads(event.data))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StreamUnavailable("an event did not carry a job") from None

    def result_object(self, job_id: str, kind: str, series: str | None = None) -> bytes:
        """The DICOM object ``kind`` (``seg``, ``sr``) the job made (of ``series``, its own or
        its source series, when the job made several)."""
        params = {"format": kind} if series is None else {"format": kind, "series": series}
        path = _job_path(job_id) + "/result"
        response = self._request(
            "GET", path, params=params, headers={"Accept": "application/dicom"}
        )
        if response.headers.get("Content-Type", "").split(";")[0].strip() != "application/dicom":
            raise self._bad_answer(response, "one DICOM object")
        return response.content

    def cancel(self, job_id: str) -> JobResource:
        return self._job(self._request("DELETE", _job_path(job_id)))

    def jobs(self, state: str | None = None, limit: int | None = None) -> list[JobResource]:
        """Recent jobs, newest first."""
        params: dict[str, str] = {}
        if state is not None:
            params["state"] = state
        if limit is not None:
            params["limit"] = str(limit)
        response = self._request("GET", "/jobs", params=params)
        listing = self._json(response)
        if not isinstance(listing, Mapping) or not isinstance(listing.get("jobs"), list):
            raise self._bad_answer(response, "a list of jobs")
        try:
            return [JobResource.from_document(item) for item in listing["jobs"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._bad_answer(response, "a list of jobs") from None

    # --- the edge: requests and the API's answers become ours ---------------------------------

    def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
    ) -> requests.Response:
        timeout = self._timeout
        if read_timeout is not None:
            connect = timeout[0] if isinstance(timeout, tuple) else timeout
            timeout = (connect, read_timeout)
        try:
            response = self._session.request(
                method,
                self._base_url + path,
                params=params,
                headers={"Accept": "application/json", **(headers or {})},
                timeout=timeout,
                stream=stream,
            )
        except requests.Timeout:
            raise ApiError(
                None, "api_unreachable", f"the model-proxy API at {self.display_url} timed out"
            ) from None
        except requests.RequestException as exc:
            raise ApiError(
                None,
                "api_unreachable",
                f"cannot reach the model-proxy API at {self.display_url} ({type(exc).__name__})",
            ) from None
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code not in (200, 202):
            raise ApiError(
                response.status_code,
                "bad_api_response",
                f"the model-proxy API at {self.display_url} answered HTTP {response.status_code}",
            )
        return response

    def _job(self, response: requests.Response) -> JobResource:
        document = self._json(response)
        try:
            return JobResource.from_document(document)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._bad_answer(response, "a job") from None

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self._bad_answer(response, "JSON") from None

    def _bad_answer(self, response: requests.Response, expected: str) -> ApiError:
        return ApiError(
            response.status_code,
            "bad_api_response",
            f"the model-proxy API at {self.display_url} did not answer with {expected}",
        )

    def _error(self, response: requests.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping):
            body = {}
        detail = body.get("detail")  # FastAPI's own errors, should one get through
        message = body.get("message") or (detail if isinstance(detail, str) else None)
        job_id = body.get("jobId")
        return ApiError(
            response.status_code,
            str(body.get("code") or f"http_{response.status_code}"),
            str(
                message
                or f"the model-proxy API at {self.display_url} answered HTTP {response.status_code}"
            ),
            retry_after=_retry_after(response.headers.get("Retry-After")),
            job_id=job_id if isinstance(job_id, str) else None,
        )


def _job_path(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))
