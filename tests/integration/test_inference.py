"""The viewer's routes end to end: API → Redis → worker process → Orthanc → example model."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from fastapi.testclient import TestClient
from pydicom.pixels import apply_modality_lut

from devtools.dicom import DicomFile
from tests.support.deployment import Ids, PacsData

pytestmark = pytest.mark.integration


def expected_mask(item: DicomFile) -> np.ndarray:
    """What the example model computes: modality values above the instance's mean."""
    ds = pydicom.dcmread(io.BytesIO(item.data))
    values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    return (values > values.mean()).astype(np.uint8)


def received(model_log: str) -> list[dict[str, Any]]:
    recent: list[dict[str, Any]] = requests.get(model_log, timeout=5).json()["recent"]
    return recent


def series_url(task: str, model: str, item: DicomFile) -> str:
    return f"/{task}/{model}/studies/{item.study_uid}/series/{item.series_uid}"


def test_series_segmentation_returns_a_mask_per_instance_of_the_series(
    api: TestClient, pacs: PacsData, model_log: str
) -> None:
    series = pacs.series_a
    response = api.get(series_url("segmentations", Ids.SEGMENTATION, series[0]))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert list(document) == [pacs.study_uid]
    by_series = document[pacs.study_uid]
    assert set(by_series) == {series[0].series_uid}
    frames = {k: v for k, v in by_series[series[0].series_uid].items() if k != "metadata"}
    assert set(frames) == {item.sop_uid for item in series}
    for item in series:
        mask = np.array(frames[item.sop_uid]["segments"][0]["points"], dtype=np.uint8)
        assert mask.shape == (item.rows, item.columns)
        assert np.array_equal(mask, expected_mask(item))


def test_the_model_receives_exactly_the_bytes_orthanc_holds(
    api: TestClient, pacs: PacsData, model_log: str
) -> None:
    series = pacs.series_b
    assert api.get(series_url("segmentations", Ids.SEGMENTATION, series[0])).status_code == 200

    [call] = received(model_log)
    assert call["shape"] == "array"
    got = {entry["sopInstanceUID"]: entry["sha256"] for entry in call["instances"]}
    stored = {
        item.sop_uid: hashlib.sha256(
            pacs.orthanc.instance_bytes(item.study_uid, item.series_uid, item.sop_uid)
        ).hexdigest()
        for item in series
    }
    assert got == stored
    # and Orthanc holds what we uploaded
    assert stored == {item.sop_uid: hashlib.sha256(item.data).hexdigest() for item in series}


def test_study_level_sends_every_instance_of_every_series(
    api: TestClient, pacs: PacsData, model_log: str
) -> None:
    response = api.get(f"/predictions/{Ids.PREDICTION}/studies/{pacs.study_uid}")

    assert response.status_code == 200, response.text
    study = response.json()[pacs.study_uid]
    assert {k for k in study if k != "metadata"} == {
        pacs.series_a[0].series_uid,
        pacs.series_b[0].series_uid,
    }
    for series in (pacs.series_a, pacs.series_b):
        instances = {k for k in study[series[0].series_uid] if k != "metadata"}
        assert instances == {item.sop_uid for item in series}
    [call] = received(model_log)
    assert call["shape"] == "array"
    assert len(call["instances"]) == len(pacs.series_a) + len(pacs.series_b)


@pytest.mark.parametrize("task", ["segmentations", "annotations", "predictions"])
@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_every_route_answers_with_the_model_json(
    api: TestClient, pacs: PacsData, task: str, level: str
) -> None:
    model = {
        "segmentations": Ids.SEGMENTATION,
        "annotations": Ids.ANNOTATION,
        "predictions": Ids.PREDICTION,
    }[task]
    item = pacs.ct_small
    url = f"/{task}/{model}/studies/{item.study_uid}"
    if level != "study":
        url += f"/series/{item.series_uid}"
    if level == "instance":
        url += f"/instances/{item.sop_uid}"

    response = api.get(url)

    assert response.status_code == 200, response.text
    frame = response.json()[item.study_uid][item.series_uid][item.sop_uid]
    if task == "segmentations":
        assert np.array(frame["segments"][0]["points"]).shape == (item.rows, item.columns)
    elif task == "annotations":
        for roi in frame["rois"]:
            assert all(0 <= x < item.columns and 0 <= y < item.rows for x, y in roi["points"])
    else:
        assert frame["metadata"][0]["value"] == int(expected_mask(item).sum())


def test_instance_level_sends_a_single_json_string(
    api: TestClient, pacs: PacsData, model_log: str
) -> None:
    item = pacs.mr_small
    url = (
        f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
        f"/instances/{item.sop_uid}"
    )

    assert api.get(url).status_code == 200
    [call] = received(model_log)
    assert call["shape"] == "string"
    assert call["instances"][0]["sha256"] == hashlib.sha256(item.data).hexdigest()


def test_explicit_server_parameter_selects_that_server(api: TestClient, pacs: PacsData) -> None:
    url = series_url("segmentations", Ids.SEGMENTATION, pacs.ct_small)
    assert api.get(url, params={"server": Ids.PACS}).status_code == 200
    wrong = api.get(url, params={"server": Ids.PACS_WRONG_PASSWORD})
    assert wrong.status_code == 502


def test_a_wrapped_model_answer_is_unwrapped(api: TestClient, pacs: PacsData) -> None:
    response = api.get(series_url("segmentations", Ids.WRAPPED, pacs.ct_small))

    assert response.status_code == 200, response.text
    assert isinstance(response.json(), dict)
    assert pacs.ct_small.study_uid in response.json()


def test_cors_lets_a_viewer_on_an_allowed_origin_call(api: TestClient, pacs: PacsData) -> None:
    url = series_url("segmentations", Ids.SEGMENTATION, pacs.ct_small)
    origin = "https://viewer.zhiva.ai"
    preflight = api.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert api.get(url, headers={"Origin": origin}).headers["access-control-allow-origin"] == origin
    foreign = api.get(url, headers={"Origin": "https://viewer.example.org"})
    assert "access-control-allow-origin" not in foreign.headers


def test_nothing_of_the_pacs_credentials_reaches_the_job_record(
    api: TestClient, pacs: PacsData, deployment: Any
) -> None:
    assert api.get(series_url("segmentations", Ids.SEGMENTATION, pacs.ct_small)).status_code == 200
    client = deployment.redis.client()
    for key in client.scan_iter("model-proxy:job:*"):
        record = json.dumps({k.decode(): v.decode() for k, v in client.hgetall(key).items()})
        assert pacs.orthanc.password not in record
