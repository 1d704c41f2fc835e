"""``data-filters``: the viewer picks which series or instances fill the model's declared inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from tests.support.deployment import Ids, PacsData

pytestmark = pytest.mark.integration


def last_call(model_log: str) -> dict[str, Any]:
    recent: list[dict[str, Any]] = requests.get(model_log, timeout=5).json()["recent"]
    assert len(recent) == 1
    return recent[0]


def study_filter_queries(pacs: PacsData) -> dict[str, list[tuple[str, str]]]:
    one = {"dataKey": "series-one", "uuid": pacs.series_a[0].series_uid}
    two = {"dataKey": "series-two", "uuid": pacs.series_b[0].series_uid}
    return {
        "json-array": [("data-filters", json.dumps([one, two]))],
        "repeated-objects": [("data-filters", json.dumps(one)), ("data-filters", json.dumps(two))],
        "axios-brackets": [
            ("data-filters[]", json.dumps(one)),
            ("data-filters[]", json.dumps(two)),
        ],
        "qs-indices": [
            ("data-filters[0][dataKey]", "series-one"),
            ("data-filters[0][uuid]", one["uuid"]),
            ("data-filters[1][dataKey]", "series-two"),
            ("data-filters[1][uuid]", two["uuid"]),
        ],
    }


@pytest.mark.parametrize("form", ["json-array", "repeated-objects", "axios-brackets", "qs-indices"])
def test_study_level_series_filters_in_every_query_form(
    api: TestClient, pacs: PacsData, model_log: str, form: str
) -> None:
    query = study_filter_queries(pacs)[form]
    response = api.get(f"/segmentations/{Ids.STUDY_FILTERS}/studies/{pacs.study_uid}", params=query)

    assert response.status_code == 200, response.text
    call = last_call(model_log)
    assert call["shape"] == "keyed"
    assert call["keys"] == ["series-one", "series-two"]
    sent = [entry["sopInstanceUID"] for entry in call["instances"]]
    assert sent == [item.sop_uid for item in pacs.series_a + pacs.series_b]
    study = response.json()[pacs.study_uid]
    assert {k for k in study if k != "metadata"} == {
        pacs.series_a[0].series_uid,
        pacs.series_b[0].series_uid,
    }


def test_series_level_instance_filters(api: TestClient, pacs: PacsData, model_log: str) -> None:
    series = pacs.series_a
    filters = [
        {"dataKey": "first", "uuid": series[0].sop_uid},
        {"dataKey": "last", "uuid": series[-1].sop_uid},
    ]
    response = api.get(
        f"/segmentations/{Ids.SERIES_FILTERS}/studies/{pacs.study_uid}"
        f"/series/{series[0].series_uid}",
        params={"data-filters": json.dumps(filters)},
    )

    assert response.status_code == 200, response.text
    call = last_call(model_log)
    assert call["keys"] == ["first", "last"]
    assert [e["sopInstanceUID"] for e in call["instances"]] == [
        series[0].sop_uid,
        series[-1].sop_uid,
    ]


def test_nested_instance_filter_inside_a_series_filter(
    api: TestClient, pacs: PacsData, model_log: str
) -> None:
    query = [
        ("data-filters[0][dataKey]", "pre"),
        ("data-filters[0][uuid]", pacs.series_a[0].series_uid),
        ("data-filters[0][dataFilter][0][dataKey]", "slice"),
        ("data-filters[0][dataFilter][0][uuid]", pacs.series_a[2].sop_uid),
        ("data-filters[1][dataKey]", "post"),
        ("data-filters[1][uuid]", pacs.series_b[0].series_uid),
    ]
    response = api.get(f"/annotations/{Ids.NESTED_FILTERS}/studies/{pacs.study_uid}", params=query)

    assert response.status_code == 200, response.text
    call = last_call(model_log)
    assert call["keys"] == ["pre", "post"]
    assert [e["sopInstanceUID"] for e in call["instances"]] == [
        pacs.series_a[2].sop_uid,
        *(item.sop_uid for item in pacs.series_b),
    ]


def test_a_missing_declared_filter_is_400_naming_the_key(api: TestClient, pacs: PacsData) -> None:
    only_one = [{"dataKey": "series-one", "uuid": pacs.series_a[0].series_uid}]
    response = api.get(
        f"/segmentations/{Ids.STUDY_FILTERS}/studies/{pacs.study_uid}",
        params={"data-filters": json.dumps(only_one)},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_data_filter"
    assert "series-two" in response.json()["message"]


def test_a_filter_uuid_that_is_not_a_uid_is_422(api: TestClient, pacs: PacsData) -> None:
    bad = [
        {"dataKey": "series-one", "uuid": "../../system"},
        {"dataKey": "series-two", "uuid": pacs.series_b[0].series_uid},
    ]
    response = api.get(
        f"/segmentations/{Ids.STUDY_FILTERS}/studies/{pacs.study_uid}",
        params={"data-filters": json.dumps(bad)},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_uid"


def test_malformed_data_filters_are_400(api: TestClient, pacs: PacsData) -> None:
    response = api.get(
        f"/segmentations/{Ids.STUDY_FILTERS}/studies/{pacs.study_uid}",
        params={"data-filters": "{not json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_data_filter"
