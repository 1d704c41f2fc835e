"""build_request: what a viewer's route names becomes a checked InferenceRequest, or our error;
and how the viewer's headers and query say it wants its answer."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

import pytest
from starlette.requests import Request

from model_proxy.broker.deps import answer_options
from model_proxy.broker.validation import ViewerPath, build_request
from model_proxy.shared.config import Catalog, Level, ModelConfig, ServerConfig, Task
from model_proxy.shared.errors import (
    InvalidDataFilter,
    InvalidUid,
    LevelNotSupported,
    UnknownModel,
    UnknownServer,
)

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
OTHER_SERVER = "0c5c2d3e-5a55-4a4e-8f11-9a7b2f8c1d01"
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
FILTERED = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
STUDY = "1.2.840.113619.2.55.3"
SERIES = "1.2.840.113619.2.55.3.1"
INSTANCE = "1.2.840.113619.2.55.3.1.1"


def _model(**extra: Any) -> ModelConfig:
    config = {
        "uri": "http://model/predict",
        "task": "segmentation",
        "supports": ["/studies", "/studies/series", "/studies/series/instances"],
    }
    return ModelConfig.model_validate({**config, **extra})


@pytest.fixture
def catalog() -> Catalog:
    servers = {
        key: ServerConfig.model_validate({"uri": f"http://{key}/dicom-web"})
        for key in (SERVER, OTHER_SERVER)
    }
    models = {
        MODEL: _model(),
        FILTERED: _model(
            supports=["/studies"], dataFilter=[{"dataKey": "t1", "title": "T1 series"}]
        ),
    }
    return Catalog(servers=servers, models=models, default_server_id=SERVER)


@pytest.mark.parametrize(
    ("path", "level"),
    [
        (ViewerPath(MODEL, STUDY), Level.STUDY),
        (ViewerPath(MODEL, STUDY, SERIES), Level.SERIES),
        (ViewerPath(MODEL, STUDY, SERIES, INSTANCE), Level.INSTANCE),
    ],
)
def test_the_level_follows_the_uids_named(catalog: Catalog, path: ViewerPath, level: Level) -> None:
    request = build_request(catalog, Task.SEGMENTATION, path)
    assert path.level is level
    assert request.level is level
    assert (request.study_uid, request.series_uid, request.instance_uid) == (
        path.study_uid,
        path.series_uid,
        path.instance_uid,
    )
    assert request.task is Task.SEGMENTATION


def test_keys_are_matched_without_case_and_the_default_server_is_used(catalog: Catalog) -> None:
    request = build_request(catalog, Task.SEGMENTATION, ViewerPath(MODEL.upper(), STUDY))
    assert (request.model_id, request.server_id) == (MODEL, SERVER)
    named = ViewerPath(MODEL, STUDY, server_id=OTHER_SERVER.upper())
    assert build_request(catalog, Task.SEGMENTATION, named).server_id == OTHER_SERVER


def test_unknown_model_and_server_are_not_found(catalog: Catalog) -> None:
    with pytest.raises(UnknownModel):
        build_request(catalog, Task.SEGMENTATION, ViewerPath("no-such-model", STUDY))
    with pytest.raises(UnknownServer):
        build_request(catalog, Task.SEGMENTATION, ViewerPath(MODEL, STUDY, server_id="nowhere"))


def test_a_level_the_model_does_not_support(catalog: Catalog) -> None:
    with pytest.raises(LevelNotSupported, match="supports /studies"):
        build_request(catalog, Task.SEGMENTATION, ViewerPath(FILTERED, STUDY, SERIES))


@pytest.mark.parametrize(
    ("path", "what"),
    [
        (ViewerPath(MODEL, "not-a-uid"), "study UID"),
        (ViewerPath(MODEL, STUDY, "1.2.x"), "series UID"),
        (ViewerPath(MODEL, STUDY, SERIES, "1.2.abc"), "instance UID"),
    ],
)
def test_each_uid_is_checked(catalog: Catalog, path: ViewerPath, what: str) -> None:
    with pytest.raises(InvalidUid, match=what):
        build_request(catalog, Task.SEGMENTATION, path)


def test_a_model_asked_on_another_tasks_route_is_served_and_logged(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="model_proxy.broker.validation"):
        request = build_request(catalog, Task.PREDICTION, ViewerPath(MODEL, STUDY))
    assert request.task is Task.PREDICTION
    assert "asked on /predictions" in caplog.text


def test_data_filters_are_read_and_required_inputs_checked_now(catalog: Catalog) -> None:
    chosen = [("data-filters", json.dumps([{"dataKey": "t1", "uuid": SERIES}]))]
    request = build_request(catalog, Task.SEGMENTATION, ViewerPath(FILTERED, STUDY), chosen)
    assert [(f.data_key, f.uuid) for f in request.data_filters] == [("t1", SERIES)]
    with pytest.raises(InvalidDataFilter, match="t1"):
        build_request(catalog, Task.SEGMENTATION, ViewerPath(FILTERED, STUDY))


def test_data_filters_are_not_read_at_instance_level(catalog: Catalog) -> None:
    chosen = [("data-filters", json.dumps([{"dataKey": "t1", "uuid": SERIES}]))]
    path = ViewerPath(MODEL, STUDY, SERIES, INSTANCE)
    assert build_request(catalog, Task.SEGMENTATION, path, chosen).data_filters == ()


# --- how the viewer wants its answer (broker.deps) ---------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query", "respond_async", "fresh"),
    [
        ({}, "", False, False),
        ({"Prefer": "respond-async, wait=5"}, "", True, False),
        ({}, "async=true", True, False),
        ({}, "async=no", False, False),
        ({"Cache-Control": "max-age=0, no-cache"}, "", False, True),
        ({"Cache-Control": "no-store"}, "async=1", True, True),
    ],
)
def test_answer_options_from_headers_and_query(
    headers: dict[str, str], query: str, respond_async: bool, fresh: bool
) -> None:
    scope = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": query.encode(),
    }
    request = Request(scope)
    options = asyncio.run(
        answer_options(
            request,
            prefer=request.headers.get("prefer"),
            cache_control=request.headers.get("cache-control"),
            respond_async=request.query_params.get("async"),
        )
    )
    assert (options.respond_async, options.fresh) == (respond_async, fresh)
    assert options.query == tuple(parse_qsl(query))
