"""The viewer's routes: ``/{segmentations|annotations|predictions}/{model}/studies/...``.

Each request becomes a job: validated, recorded in Redis, queued for a worker; the viewer's GET
then waits for it and answers with the model's JSON document (:func:`answer_viewer`).

Every registered route has a name of its own, ``<route prefix>_<level>`` (``segmentations_study``,
``predictions_instance``, ...), which is also its handler's name and starts its OpenAPI
operationId.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from model_proxy.broker.deps import (
    AnswerOptions,
    Services,
    answer_options,
    instance_path,
    series_path,
    study_path,
)
from model_proxy.broker.event_stream import EVENT_STREAM_TYPE, wants_events
from model_proxy.broker.inference import answer_viewer
from model_proxy.broker.openapi import ANSWER_HEADERS, DATA_FILTERS, NOT_MODIFIED, errors
from model_proxy.broker.requesters import CallerParam
from model_proxy.broker.validation import ViewerPath
from model_proxy.shared.config import Task
from model_proxy.shared.schemas import ErrorBody, JobResource

__all__ = ["router"]

router = APIRouter(tags=["inference"])

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The model's JSON document; asked with `Accept: text/event-stream`, "
        "the job's server-sent events instead (as `GET /jobs/{id}/events`), the last one, "
        "`end`, carrying the job with its result link",
        "content": {"application/json": {}, EVENT_STREAM_TYPE: {"schema": {"type": "string"}}},
        "headers": ANSWER_HEADERS,
    },
    304: NOT_MODIFIED,
    202: {
        "description": "Still running (past the wait limit, or asked with `Prefer: "
        "respond-async` or `?async=true`): poll the job at `Location`",
        "model": JobResource,
        "headers": {
            "Location": {"description": "The job's URL", "schema": {"type": "string"}},
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}},
        },
    },
    **errors(400, 404, 409, 410, 422, 429, 502, 503, 504),
}
_RESPONSES[429] = {
    **_RESPONSES[429],
    "model": ErrorBody,
    "description": "Too many jobs of this model are waiting (`queue_full`), or the caller "
    "already waits for its limit of unfinished jobs (`too_many_jobs`); see Retry-After",
}
_RESPONSES[422] = {
    **_RESPONSES[422],
    "description": f"{_RESPONSES[422]['description']}; a `callback` not allowed "
    "(`callback_not_allowed`: see `MODEL_PROXY_CALLBACK_ORIGINS`), or one more than the job "
    "keeps (`too_many_callbacks`)",
}
_STUDY = "/{model}/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"

# name, task, path below the task's prefix, and the dependency that reads that path
_ROUTES: list[tuple[str, Task, str, Callable[..., Awaitable[ViewerPath]]]] = [
    ("segmentations_study", Task.SEGMENTATION, _STUDY, study_path),
    ("segmentations_series", Task.SEGMENTATION, _SERIES, series_path),
    ("segmentations_instance", Task.SEGMENTATION, _INSTANCE, instance_path),
    ("annotations_study", Task.ANNOTATION, _STUDY, study_path),
    ("annotations_series", Task.ANNOTATION, _SERIES, series_path),
    ("annotations_instance", Task.ANNOTATION, _INSTANCE, instance_path),
    ("predictions_study", Task.PREDICTION, _STUDY, study_path),
    ("predictions_series", Task.PREDICTION, _SERIES, series_path),
    ("predictions_instance", Task.PREDICTION, _INSTANCE, instance_path),
]


def _add_route(
    name: str, task: Task, path: str, read_path: Callable[..., Awaitable[ViewerPath]]
) -> None:
    async def endpoint(
        request: Request,
        services: Services,
        who: CallerParam,
        viewer_path: Annotated[ViewerPath, Depends(read_path)],
        options: Annotated[AnswerOptions, Depends(answer_options)],
    ) -> Response:
        return await answer_viewer(
            services,
            task,
            viewer_path,
            options,
            who,
            request.is_disconnected,
            events=wants_events(request.headers.get("accept")),
        )

    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = (
        f"The {task.value} of model `model` on this DICOM data. Data filters "
        "(`data-filters`) are read at study and series level. A job that failed answers "
        "with its recorded error's status."
    )
    router.add_api_route(
        f"/{task.route_prefix}{path}",
        endpoint,
        methods=["GET"],
        name=name,
        responses=_RESPONSES,
        openapi_extra=None if read_path is instance_path else {"parameters": [DATA_FILTERS]},
    )


for _route in _ROUTES:
    _add_route(*_route)
