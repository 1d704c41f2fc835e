"""The multipart transport end to end: API → Redis → worker → Orthanc → the example model.

Each model of ``Ids.MULTIPART`` is the twin of a JSON model with ``"transport": "multipart"``.
The example model must receive, as the parts of one multipart/related body, exactly the files
Orthanc holds (``/instances/{id}/file``), with the data-filter keys in the parts' headers, and
answer the same document as its JSON twin.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.dicom import DicomFile
from tests.support.deployment import Ids, PacsData

pytestmark = pytest.mark.integration


def orthanc_sha256(pacs: PacsData, item: DicomFile) -> str:
    data = pacs.orthanc.instance_bytes(item.study_uid, item.series_uid, item.sop_uid)
    return hashlib.sha256(data).hexdigest()


def ask_both(
    api: TestClient, model_log: str, model: str, path: str, params: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask the JSON model and its multipart twin; both answers must be the same document.
    Returns what the example model received from each (JSON, then multipart)."""
    requests.post(model_log.replace("/received", "/reset"), timeout=5).raise_for_status()
    answers = []
    for key in (model, Ids.MULTIPART[model]):
        response = api.get(path.format(model=key), params=params)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert answers[0] == answers[1]
    json_call, multipart_call = requests.get(model_log, timeout=5).json()["recent"]
    assert json_call["transport"] == "json"
    assert multipart_call["transport"] == "multipart"
    for field in ("shape", "keys", "instances"):
        assert multipart_call[field] == json_call[field], field
    return json_call, multipart_call


def sent(call: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["sopInstanceUID"], entry["sha256"]) for entry in call["instances"]]


def test_a_series_arrives_as_orthancs_files(
    api: TestClient, pacs: PacsData, model_log: str
) -> None:
    series = pacs.series_a
    path = f"/segmentations/{{model}}/studies/{pacs.study_uid}/series/{series[0].series_uid}"
    _, call = ask_both(api, model_log, Ids.SEGMENTATION, path)

    assert call["shape"] == "array"
    assert sorted(sent(call)) == sorted((i.sop_uid, orthanc_sha256(pacs, i)) for i in series)


def test_a_study_arrives_as_orthancs_files(api: TestClient, pacs: PacsData, model_log: str) -> None:
    _, call = ask_both(
        api, model_log, Ids.PREDICTION, f"/predictions/{{model}}/studies/{pacs.study_uid}"
    )

    every = pacs.series_a + pacs.series_b
    assert sorted(sent(call)) == sorted((i.sop_uid, orthanc_sha256(pacs, i)) for i in every)


def test_one_instance_is_one_part(api: TestClient, pacs: PacsData, model_log: str) -> None:
    item = pacs.mr_small
    path = (
        f"/segmentations/{{model}}/studies/{item.study_uid}/series/{item.series_uid}"
        f"/instances/{item.sop_uid}"
    )
    _, call = ask_both(api, model_log, Ids.SEGMENTATION, path)

    assert call["shape"] == "string"
    assert sent(call) == [(item.sop_uid, orthanc_sha256(pacs, item))]


def test_study_data_filters_key_each_part(api: TestClient, pacs: PacsData, model_log: str) -> None:
    filters = [
        {"dataKey": "series-two", "uuid": pacs.series_b[0].series_uid},
        {"dataKey": "series-one", "uuid": pacs.series_a[0].series_uid},
    ]
    _, call = ask_both(
        api,
        model_log,
        Ids.STUDY_FILTERS,
        f"/segmentations/{{model}}/studies/{pacs.study_uid}",
        {"data-filters": json.dumps(filters)},
    )

    assert call["shape"] == "keyed"
    assert call["keys"] == ["series-one", "series-two"]  # the order models.json declares
    expected = [(i.sop_uid, orthanc_sha256(pacs, i)) for i in pacs.series_a + pacs.series_b]
    assert sorted(sent(call)[: len(pacs.series_a)]) == sorted(expected[: len(pacs.series_a)])
    assert sorted(sent(call)[len(pacs.series_a) :]) == sorted(expected[len(pacs.series_a) :])
    assert [e["dataKey"] for e in call["instances"]] == ["series-one"] * len(pacs.series_a) + [
        "series-two"
    ] * len(pacs.series_b)


def test_series_and_nested_data_filters(api: TestClient, pacs: PacsData, model_log: str) -> None:
    series = pacs.series_a
    filters = [
        {"dataKey": "first", "uuid": series[0].sop_uid},
        {"dataKey": "last", "uuid": series[-1].sop_uid},
    ]
    _, call = ask_both(
        api,
        model_log,
        Ids.SERIES_FILTERS,
        f"/segmentations/{{model}}/studies/{pacs.study_uid}/series/{series[0].series_uid}",
        {"data-filters": json.dumps(filters)},
    )
    assert sent(call) == [(i.sop_uid, orthanc_sha256(pacs, i)) for i in (series[0], series[-1])]
    assert [e["dataKey"] for e in call["instances"]] == ["first", "last"]

    nested = [
        {
            "dataKey": "pre",
            "uuid": series[0].series_uid,
            "dataFilter": [{"dataKey": "slice", "uuid": series[2].sop_uid}],
        },
        {"dataKey": "post", "uuid": pacs.series_b[0].series_uid},
    ]
    _, call = ask_both(
        api,
        model_log,
        Ids.NESTED_FILTERS,
        f"/annotations/{{model}}/studies/{pacs.study_uid}",
        {"data-filters": json.dumps(nested)},
    )
    assert call["keys"] == ["pre", "post"]
    assert sent(call)[0] == (series[2].sop_uid, orthanc_sha256(pacs, series[2]))
    assert [e["dataKey"] for e in call["instances"]] == ["pre/slice"] + ["post"] * len(
        pacs.series_b
    )


def test_the_job_time_limit_applies_to_a_multipart_call(api: TestClient, pacs: PacsData) -> None:
    item = pacs.ct_small
    response = api.get(
        f"/segmentations/{Ids.MULTIPART_DEADLINE}/studies/{item.study_uid}/series/{item.series_uid}"
    )

    assert response.status_code == 504, response.text
    body = response.json()
    assert body["code"] == "model_timeout"
    assert "time limit (1.5 s)" in body["message"]
