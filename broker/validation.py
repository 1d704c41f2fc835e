"""Turning a viewer's route, path and query into a validated :class:`InferenceRequest`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from model_proxy.shared.config import Catalog, Level, Task
from model_proxy.shared.datafilters import parse_data_filters
from model_proxy.shared.errors import LevelNotSupported
from model_proxy.shared.inputs import plan_inputs
from model_proxy.shared.request import InferenceRequest
from model_proxy.shared.uids import check_uid

__all__ = ["build_request"]

log = logging.getLogger(__name__)


def build_request(
    catalog: Catalog,
    *,
    task: Task,
    model_id: str,
    server_id: str | None,
    study_uid: str,
    series_uid: str | None = None,
    instance_uid: str | None = None,
    query: Iterable[tuple[str, str]] = (),
) -> InferenceRequest:
    """Check everything a worker would otherwise find out too late; raise our errors."""
    model = catalog.model(model_id)
    level = (
        Level.STUDY
        if series_uid is None
        else (Level.SERIES if instance_uid is None else Level.INSTANCE)
    )
    if level not in model.supports:
        supported = ", ".join(level.value for level in model.supports)
        raise LevelNotSupported(
            f"model {model_id} does not support {level.value}; it supports {supported}"
        )
    server_key, _ = catalog.server(server_id)
    if model.task is not task:
        log.info(
            "model %s has task %s but was asked on /%s; serving it anyway",
            model_id,
            model.task.value,
            task.route_prefix,
        )
    check_uid(study_uid, "study UID")
    if series_uid is not None:
        check_uid(series_uid, "series UID")
    if instance_uid is not None:
        check_uid(instance_uid, "instance UID")
    data_filters = parse_data_filters(query) if level is not Level.INSTANCE else ()
    request = InferenceRequest(
        task=task,
        model_id=model_id.lower(),
        server_id=server_key,
        level=level,
        study_uid=study_uid,
        series_uid=series_uid,
        instance_uid=instance_uid,
        data_filters=data_filters,
    )
    plan_inputs(request, model)  # rejects missing data filters now, not in the worker
    return request
