"""Turning what a viewer's route names into a validated :class:`InferenceRequest`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from model_proxy.shared.config import Catalog, Level, Task
from model_proxy.shared.datafilters import data_filters_from_items, parse_data_filters
from model_proxy.shared.errors import LevelNotSupported
from model_proxy.shared.fingerprint import request_fingerprint
from model_proxy.shared.inputs import plan_inputs
from model_proxy.shared.request import DataFilter, InferenceRequest
from model_proxy.shared.uids import check_uid

__all__ = ["ViewerPath", "build_request"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewerPath:
    """What a viewer's route names, as sent and not yet checked: the model, the DICOM data
    (a study, a series of it, or one instance) and the server (``None``: the default one)."""

    model_id: str
    study_uid: str
    series_uid: str | None = None
    instance_uid: str | None = None
    server_id: str | None = None

    @property
    def level(self) -> Level:
        if self.series_uid is None:
            return Level.STUDY
        return Level.SERIES if self.instance_uid is None else Level.INSTANCE


def build_request(
    catalog: Catalog,
    task: Task,
    path: ViewerPath,
    query: Iterable[tuple[str, str]] = (),
    filter_items: Sequence[Any] | None = None,
) -> InferenceRequest:
    """Check everything a worker would otherwise find out too late; raise our errors.

    The data filters are read from ``query`` (a viewer's route), or given as JSON objects in
    ``filter_items`` (the ``dataFilters`` of a ``POST /jobs`` body); at instance level neither
    is read.

    The request's ``sharing_key`` is the fingerprint of what the worker will fetch and of the
    model's and server's settings, so requests that differ only in ignored data filters share
    a job, and a changed configuration does not get an answer made under the old one."""
    model = catalog.model(path.model_id)
    level = path.level
    if level not in model.supports:
        supported = ", ".join(level.value for level in model.supports)
        raise LevelNotSupported(
            f"model {path.model_id} does not support {level.value}; it supports {supported}"
        )
    server_key, server = catalog.server(path.server_id)
    if model.task is not task:
        log.info(
            "model %s has task %s but was asked on /%s; serving it anyway",
            path.model_id,
            model.task.value,
            task.route_prefix,
        )
    for uid, what in (
        (path.study_uid, "study UID"),
        (path.series_uid, "series UID"),
        (path.instance_uid, "instance UID"),
    ):
        if uid is not None:
            check_uid(uid, what)
    request = InferenceRequest(
        task=task,
        model_id=path.model_id.lower(),
        server_id=server_key,
        level=level,
        study_uid=path.study_uid,
        series_uid=path.series_uid,
        instance_uid=path.instance_uid,
        data_filters=_data_filters(level, query, filter_items),
    )
    plan = plan_inputs(request, model)  # rejects missing data filters now, not in the worker
    return request.model_copy(
        update={"sharing_key": request_fingerprint(request, plan, model, server)}
    )


def _data_filters(
    level: Level, query: Iterable[tuple[str, str]], items: Sequence[Any] | None
) -> tuple[DataFilter, ...]:
    if level is Level.INSTANCE:
        return ()
    if items is not None:
        return data_filters_from_items(items, "dataFilters")
    return parse_data_filters(query)
