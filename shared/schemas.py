"""The shapes of the API's own JSON answers, for clients and the OpenAPI document.

In ``shared`` because the workers send the same job resource to webhooks."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from model_proxy.shared.jobs import Job, JobError, JobState
from model_proxy.shared.jobs.estimate import NO_ESTIMATE, JobEstimate
from model_proxy.shared.webhooks.records import Callback
from model_proxy.shared.webhooks.urls import public_url

__all__ = ["CallbackView", "ErrorBody", "JobList", "JobResource", "job_url"]


def job_url(job_id: str) -> str:
    """Where a client polls a job: ``GET /jobs/{id}``."""
    return f"/jobs/{job_id}"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(_Camel):
    message: str = Field(description="What went wrong, for a person; no secrets, no patient data")
    code: str = Field(description="A stable code for programs, e.g. `unknown_model`")
    job_id: str | None = Field(default=None, description="The job, when one was made")


class JobRequestView(_Camel):
    task: str
    model: str
    server: str
    level: str
    study: str
    series: str | None
    instance: str | None
    data_filters: list[dict[str, Any]]


class JobProgress(_Camel):
    instances_fetched: int
    instances_total: int | None = Field(description="Known when the PACS says how many")
    bytes_fetched: int
    bytes_total: int | None = Field(description="Unknown: PACS stream without a length")


class JobLinks(_Camel):
    self_: str = Field(alias="self")
    result: str


class JobOutputView(_Camel):
    format: str = Field(description="`seg` or `sr`: `GET /jobs/{id}/result?format=<format>`")
    sop_class_uid: str | None = Field(alias="sopClassUID")
    series_instance_uid: str | None = Field(alias="seriesInstanceUID")
    sop_instance_uid: str | None = Field(alias="sopInstanceUID")
    source_series_instance_uid: str | None = Field(
        default=None,
        alias="sourceSeriesInstanceUID",
        description="A SEG's source series (one SEG per segmented series)",
    )
    server: str | None = Field(description="The servers.json key of the PACS it is stored into")
    stored: bool = Field(description="The PACS confirmed it stored the object")


class QueuePlaceView(_Camel):
    position: int = Field(description="1-based place in the model's queue (1: next to start)")
    ahead: int = Field(description="Jobs of the model queued before this one")
    concurrency: int = Field(
        description="Jobs of the model run at once: its `maxConcurrency`, else the slots of "
        "the live workers reading its queue, else 1"
    )


class CallbackAttemptView(_Camel):
    at: dt.datetime
    status: int | None = Field(description="The HTTP status the callback answered")
    error: str | None = Field(
        description="Why no status: `timeout`, `unreachable`, `callback_not_allowed`, "
        "`invalid_url`, ..."
    )


class CallbackView(_Camel):
    url: str = Field(
        description="The callback URL in full to the API key or token that gave it and to "
        "admins; to anyone else (anonymous callers always) only its origin, scheme://host[:port]"
    )
    attempts: list[CallbackAttemptView]
    delivered: bool = Field(description="A try was answered 2xx")
    failed: bool = Field(description="Given up: refused (4xx), or retried for too long")

    @classmethod
    def from_callback(cls, callback: Callback, *, show_url: bool) -> CallbackView:
        return cls(
            url=callback.url if show_url else public_url(callback.url),
            attempts=[
                CallbackAttemptView(at=_moment(a.at), status=a.status, error=a.error)
                for a in callback.attempts
            ],
            delivered=callback.delivered,
            failed=callback.outcome == "failed",
        )


class JobResource(_Camel):
    id: str
    state: JobState
    request: JobRequestView
    progress: JobProgress
    created_at: dt.datetime
    started_at: dt.datetime | None
    inferring_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime
    attempts: int = Field(description="Runs started; more than one when a worker died")
    error: JobError | None
    outputs: list[JobOutputView] = Field(
        default_factory=list,
        description="The DICOM objects made from the answer, and whether the PACS stored them",
    )
    output_error: JobError | None = Field(
        default=None,
        description="Why an object the model's `store` asks for was not made (the job still "
        "succeeded with its answer)",
    )
    store_error: JobError | None = Field(
        default=None,
        description="Why an object made was not stored into the PACS (the job still succeeded; "
        "the object is served by `GET /jobs/{id}/result?format=`)",
    )
    queue: QueuePlaceView | None = Field(
        default=None,
        description="While queued: the job's place in its model's queue; null otherwise (and "
        "in `GET /jobs` listings)",
    )
    estimated_start_at: dt.datetime | None = Field(
        default=None,
        description="While queued: an estimate of when a worker starts it, from the model's "
        "recent run times and concurrency; null without recent runs, once started, and in "
        "listings",
    )
    estimated_finish_at: dt.datetime | None = Field(
        default=None,
        description="Until it finishes: an estimate of when it will, from the model's recent "
        "run times; null without recent runs, once finished, and in listings",
    )
    links: JobLinks
    requested_by: list[str] | None = Field(
        default=None,
        description="Who asked for the job and waits for it (principal names, or "
        "`anonymous@<address>`); shown to admins only",
    )
    callbacks: list[CallbackView] | None = Field(
        default=None,
        description="The job's webhooks (`?callback=`) and each POST tried; shown when it has "
        "any (not in the webhook's own body)",
    )

    @classmethod
    def from_job(
        cls,
        job: Job,
        *,
        show_requesters: bool = False,
        estimate: JobEstimate = NO_ESTIMATE,
        callbacks: list[CallbackView] | None = None,
        base_url: str = "",
    ) -> JobResource:
        """The resource of ``job``, with the ``estimate`` of its queue place and times
        (:func:`~model_proxy.broker.estimates.estimate_job`; none by default), ``callbacks``
        when it has some, and its links under ``base_url`` (empty: relative)."""
        request = job.request
        place = estimate.queue
        url = base_url.rstrip("/") + job_url(job.id)
        return cls(
            id=job.id,
            state=job.state,
            request=JobRequestView(
                task=request.task.value,
                model=request.model_id,
                server=request.server_id,
                level=request.level.value,
                study=request.study_uid,
                series=request.series_uid,
                instance=request.instance_uid,
                data_filters=[f.model_dump(by_alias=True) for f in request.data_filters],
            ),
            progress=JobProgress(
                instances_fetched=job.instances_fetched,
                instances_total=job.instances_total,
                bytes_fetched=job.bytes_fetched,
                bytes_total=None,
            ),
            created_at=_moment(job.created_at),
            started_at=_moment(job.started_at),
            inferring_at=_moment(job.inferring_at),
            finished_at=_moment(job.finished_at),
            updated_at=_moment(job.updated_at),
            attempts=job.attempts,
            error=job.error,
            outputs=[JobOutputView.model_validate(output.model_dump()) for output in job.outputs],
            output_error=job.output_error,
            store_error=job.store_error,
            queue=None if place is None else QueuePlaceView.model_validate(place.__dict__),
            estimated_start_at=_moment(estimate.start_at),
            estimated_finish_at=_moment(estimate.finish_at),
            links=JobLinks.model_validate({"self": url, "result": f"{url}/result"}),
            requested_by=list(job.requesters) if show_requesters else None,
            callbacks=callbacks or None,
        )

    def to_json(self) -> dict[str, Any]:
        """The resource as JSON; ``requestedBy`` only when shown (to an admin), ``callbacks``
        only when the job has some."""
        hidden = {
            name for name in ("requested_by", "callbacks") if getattr(self, name) is None
        } or None
        return self.model_dump(mode="json", by_alias=True, exclude=hidden)


class JobList(_Camel):
    jobs: list[JobResource]


def _moment(timestamp: float | None) -> Any:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, dt.UTC)
