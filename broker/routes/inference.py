"""The viewer's routes: ``/{segmentations|annotations|predictions}/{model}/studies/...``.

Each request becomes a job: validated, recorded in Redis, queued for a worker; the viewer's GET
then waits for it and answers with the model's JSON document (:func:`answer_viewer`).

Every registered route has a name of its own, ``<route prefix>_<level>`` (``segmentations_study``,
``predictions_instance``, ...), which is also its handler's name and starts its OpenAPI
operationId.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from model_proxy.broker.deps import (
    AnswerOptions,
    Services,
    answer_options,
    instance_path,
    series_path,
    study_path,
)
from model_proxy.broker.inference import answer_viewer
from model_proxy.broker.schemas import JobResource
from model_proxy.broker.validation import ViewerPath
from model_proxy.shared.config import Task

__all__ = ["router"]

router = APIRouter(tags=["inference"])

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"description": description, "content": {"application/json": {"example": example}}}
    for status, description, example in [
        (400, "Bad data filters", {"message": "...", "code": "invalid_data_filter"}),
        (
            404,
            "Unknown model or server, unsupported level, or no such DICOM data",
            {"message": "Not found", "code": "unknown_model"},
        ),
        (422, "A UID that is not a DICOM UID", {"message": "...", "code": "invalid_uid"}),
        (502, "The PACS or the model failed", {"message": "...", "code": "model_error"}),
        (410, "The job was cancelled", {"message": "...", "code": "job_cancelled"}),
        (
            429,
            "Too many jobs of this model are waiting (see Retry-After)",
            {"message": "...", "code": "queue_full"},
        ),
        (503, "Redis cannot be reached", {"message": "...", "code": "redis_unavailable"}),
        (
            504,
            "The PACS or the model did not answer in time",
            {"message": "...", "code": "model_timeout"},
        ),
    ]
}
_OK: dict[int | str, dict[str, object]] = {
    200: {"description": "The model's JSON document", "content": {"application/json": {}}},
    202: {
        "description": "Still running (past the wait limit, or asked with `Prefer: "
        "respond-async` or `?async=true`): poll the job at `Location`",
        "model": JobResource,
    },
}
_STUDY = "/{model}/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"

# name, task, path below the task's prefix, and the dependency that reads that path
_ROUTES: list[tuple[str, Task, str, Callable[..., ViewerPath]]] = [
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


def _add_route(name: str, task: Task, path: str, read_path: Callable[..., ViewerPath]) -> None:
    async def endpoint(
        services: Services,
        viewer_path: Annotated[ViewerPath, Depends(read_path)],
        options: Annotated[AnswerOptions, Depends(answer_options)],
    ) -> Response:
        return await answer_viewer(services, task, viewer_path, options)

    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = (
        f"The {task.value} of model `model` on this DICOM data. Data filters "
        "(`data-filters`) are read at study and series level."
    )
    router.add_api_route(
        f"/{task.route_prefix}{path}",
        endpoint,
        methods=["GET"],
        name=name,
        responses={**_OK, **_ERRORS},
    )


for _route in _ROUTES:
    _add_route(*_route)
