"""Results as DICOM on the real stack: a job of a model with ``store`` ends with its SEG or SR
beside the answer, served by ``GET /jobs/{id}/result?format=``; read back with highdicom and
checked with dciodvfy."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
import redis
import requests
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from devtools.dicom import ct_series
from devtools.redis_server import RedisServer
from model_proxy.shared.dicomweb.multipart import boundary_from_content_type, iter_parts
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.deployment import Ids, PacsData

pytestmark = pytest.mark.integration


def _run(api: TestClient, route: str, model: str, pacs: PacsData) -> tuple[str, Any]:
    item = pacs.series_a[0]
    url = f"/{route}/{model}/studies/{item.study_uid}/series/{item.series_uid}"
    response = api.get(url)
    assert response.status_code == 200, response.text
    return response.headers["X-Job-Id"], response.json()


def _object(api: TestClient, job_id: str, kind: str, tmp_path: Path) -> pydicom.Dataset:
    response = api.get(f"/jobs/{job_id}/result", params={"format": kind})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    path = tmp_path / f"{kind}.dcm"
    path.write_bytes(response.content)
    assert dciodvfy_errors(path) == []
    return pydicom.dcmread(io.BytesIO(response.content))


def test_a_segmentation_job_serves_its_seg(api: TestClient, pacs: PacsData, tmp_path: Path) -> None:
    job_id, answer = _run(api, "segmentations", Ids.SEG_OBJECTS, pacs)
    job = api.get(f"/jobs/{job_id}").json()
    assert [output["format"] for output in job["outputs"]] == ["seg"]
    assert job["outputError"] is None and job["storeError"] is None

    seg = hd.seg.Segmentation.from_dataset(_object(api, job_id, "seg", tmp_path))
    sources = {f.sop_uid: f for f in pacs.series_a}
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == set(sources)
    assert seg.SoftwareVersions == "2.1.0"
    assert seg.ManufacturerModelName == "Threshold finder"
    series = answer[pacs.study_uid][pacs.series_a[0].series_uid]
    compared = 0
    for sop_uid, frame in series.items():
        if sop_uid == "metadata":
            continue
        expected = np.zeros_like(np.asarray(frame["segments"][0]["points"]), dtype=bool)
        for segment in frame["segments"]:
            expected |= np.asarray(segment["points"]) != 0
        if not expected.any():
            continue
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[sop_uid], combine_segments=True
        )[0]
        assert np.array_equal(mask != 0, expected), sop_uid
        compared += 1
    assert compared > 0


@pytest.mark.parametrize(
    ("route", "model"),
    [("annotations", Ids.ANNOTATION_OBJECTS), ("predictions", Ids.PREDICTION_OBJECTS)],
)
def test_annotation_and_prediction_jobs_serve_their_sr(
    api: TestClient, pacs: PacsData, tmp_path: Path, route: str, model: str
) -> None:
    job_id, _ = _run(api, route, model, pacs)
    job = api.get(f"/jobs/{job_id}").json()
    assert [(output["format"], output["stored"]) for output in job["outputs"]] == [("sr", True)]
    report = _object(api, job_id, "sr", tmp_path)
    assert report.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert report.StudyInstanceUID == pacs.study_uid
    assert job["outputs"][0]["sopInstanceUID"] == report.SOPInstanceUID
    assert _in_pacs(pacs, job["outputs"][0]) == [report.SOPInstanceUID]
    missing = api.get(f"/jobs/{job_id}/result", params={"format": "seg"})
    assert missing.status_code == 404
    assert missing.json()["code"] == "result_object_not_found"


def _in_pacs(pacs: PacsData, output: dict[str, Any]) -> list[str]:
    """The SOP Instance UIDs QIDO-RS finds in the test study's series of ``output``."""
    orthanc = pacs.orthanc
    response = requests.get(
        f"{orthanc.dicomweb}/studies/{pacs.study_uid}/series/"
        f"{output['seriesInstanceUID']}/instances",
        auth=(orthanc.user, orthanc.password),
        headers={"Accept": "application/dicom+json"},
        timeout=10,
    )
    if response.status_code == 204 or not response.content:
        return []
    assert response.status_code == 200, response.text
    return [item["00080018"]["Value"][0] for item in response.json()]


def test_a_segmentation_job_stores_its_seg_into_the_study(api: TestClient, pacs: PacsData) -> None:
    job_id, _ = _run(api, "segmentations", Ids.SEG_OBJECTS, pacs)
    job = api.get(f"/jobs/{job_id}").json()
    (output,) = job["outputs"]
    served = pydicom.dcmread(
        io.BytesIO(api.get(f"/jobs/{job_id}/result", params={"format": "seg"}).content)
    )
    assert output == {
        "format": "seg",
        "sopClassUID": "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "seriesInstanceUID": served.SeriesInstanceUID,
        "sopInstanceUID": served.SOPInstanceUID,
        "sourceSeriesInstanceUID": pacs.series_a[0].series_uid,
        "server": Ids.PACS,
        "stored": True,
    }
    assert job["storeError"] is None
    assert _in_pacs(pacs, output) == [served.SOPInstanceUID]


def test_a_refused_store_leaves_the_job_succeeded_with_the_error(
    api: TestClient, pacs: PacsData
) -> None:
    job_id, answer = _run(api, "segmentations", Ids.SEG_STORE_REFUSED, pacs)
    job = api.get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["error"] is None
    (output,) = job["outputs"]
    assert output["stored"] is False and output["server"] == Ids.PACS_WRONG_PASSWORD
    assert job["storeError"]["code"] == "pacs_auth_failed"
    assert "not-the-Password" not in json.dumps(job)
    assert api.get(f"/jobs/{job_id}/result").json() == answer
    assert api.get(f"/jobs/{job_id}/result", params={"format": "seg"}).status_code == 200
    assert _in_pacs(pacs, output) == []


def test_a_model_without_store_has_no_objects(api: TestClient, pacs: PacsData) -> None:
    job_id, _ = _run(api, "segmentations", Ids.SEGMENTATION, pacs)
    assert api.get(f"/jobs/{job_id}").json()["outputs"] == []
    for kind in ("seg", "sr"):
        response = api.get(f"/jobs/{job_id}/result", params={"format": kind})
        assert response.status_code == 404
        assert response.json() == {
            "code": "result_object_not_found",
            "message": f"job {job_id} made no {kind} object",
            "jobId": job_id,
        }
    assert api.get(f"/jobs/{job_id}/result", params={"format": "json"}).status_code == 200
    assert api.get(f"/jobs/{job_id}/result", params={"format": "pdf"}).status_code == 422


def _delete_from_pacs(pacs: PacsData, sop_uid: str) -> None:
    session, base = pacs.orthanc.session, pacs.orthanc.base
    (found,) = session.post(f"{base}/tools/lookup", data=sop_uid, timeout=10).json()
    session.delete(f"{base}/instances/{found['ID']}", timeout=10).raise_for_status()


def test_storing_a_jobs_objects_again_puts_them_back_into_the_pacs(
    api: TestClient, pacs: PacsData
) -> None:
    job_id, _ = _run(api, "segmentations", Ids.SEG_OBJECTS, pacs)
    (output,) = api.get(f"/jobs/{job_id}").json()["outputs"]
    _delete_from_pacs(pacs, output["sopInstanceUID"])
    assert _in_pacs(pacs, output) == []

    response = api.post(f"/jobs/{job_id}/store")

    assert response.status_code == 202, response.text
    assert response.json()["id"] == job_id and response.json()["state"] == "succeeded"
    deadline = time.monotonic() + 10
    while not _in_pacs(pacs, output) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _in_pacs(pacs, output) == [output["sopInstanceUID"]]
    job = api.get(f"/jobs/{job_id}").json()
    assert job["outputs"] == [output] and job["storeError"] is None


def test_storing_again_a_refused_store_records_the_error_again(
    api: TestClient, pacs: PacsData, redis_server: RedisServer
) -> None:
    job_id, _ = _run(api, "segmentations", Ids.SEG_STORE_REFUSED, pacs)
    client = redis.Redis.from_url(redis_server.url)
    key = next(iter(client.scan_iter(f"*:job:{job_id}")))
    client.hdel(key, "store_error")  # so that the new attempt's record shows
    assert api.get(f"/jobs/{job_id}").json()["storeError"] is None

    assert api.post(f"/jobs/{job_id}/store").status_code == 202

    deadline = time.monotonic() + 10
    while api.get(f"/jobs/{job_id}").json()["storeError"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    job = api.get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["storeError"]["code"] == "pacs_auth_failed"
    assert job["outputs"][0]["stored"] is False


def test_only_a_succeeded_job_with_objects_is_stored_again(api: TestClient, pacs: PacsData) -> None:
    without, _ = _run(api, "segmentations", Ids.SEGMENTATION, pacs)
    response = api.post(f"/jobs/{without}/store")
    assert response.status_code == 404
    assert response.json()["code"] == "result_object_not_found"

    item = pacs.series_a[0]
    failing = api.get(f"/segmentations/{Ids.FAILING}/studies/{item.study_uid}")
    assert failing.status_code == 502
    failed_id = failing.json()["jobId"]
    response = api.post(f"/jobs/{failed_id}/store")
    assert response.status_code == 409
    assert response.json()["code"] == "job_not_succeeded"

    missing = api.post(f"/jobs/{'0' * 32}/store")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_job"


@pytest.fixture(scope="module")
def two_series(pacs: PacsData) -> tuple[str, dict[str, set[str]]]:
    """A study of its own with two CT series; (study, series UID -> its SOP Instance UIDs)."""
    study_uid = generate_uid()
    series: dict[str, set[str]] = {}
    for seed in (31, 32):
        for item in ct_series(study_uid=study_uid, slices=2, rows=16, columns=16, seed=seed):
            pacs.orthanc.upload(item.data)
            series.setdefault(item.series_uid, set()).add(item.sop_uid)
    return study_uid, series


def _referenced(seg: pydicom.Dataset) -> dict[str, set[str]]:
    return {
        str(series.SeriesInstanceUID): {
            str(item.ReferencedSOPInstanceUID) for item in series.ReferencedInstanceSequence
        }
        for series in seg.ReferencedSeriesSequence
    }


def test_a_study_segmented_in_two_series_makes_a_seg_per_series(
    api: TestClient, pacs: PacsData, two_series: tuple[str, dict[str, set[str]]], tmp_path: Path
) -> None:
    study_uid, series = two_series
    response = api.get(f"/segmentations/{Ids.SEG_OBJECTS}/studies/{study_uid}")
    assert response.status_code == 200, response.text
    job_id = response.headers["X-Job-Id"]
    job = api.get(f"/jobs/{job_id}").json()
    assert job["outputError"] is None and job["storeError"] is None
    outputs = job["outputs"]
    assert [output["format"] for output in outputs] == ["seg", "seg"]
    assert all(output["stored"] for output in outputs)
    assert {output["sourceSeriesInstanceUID"] for output in outputs} == set(series)

    both = api.get(f"/jobs/{job_id}/result", params={"format": "seg"})
    assert both.status_code == 200
    content_type = both.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"')
    parts = list(iter_parts([both.content], boundary_from_content_type(content_type)))
    read = [pydicom.dcmread(io.BytesIO(part)) for part in parts]
    assert [ds.SOPInstanceUID for ds in read] == [o["sopInstanceUID"] for o in outputs]
    for output in outputs:
        assert f"Content-ID: <{output['sopInstanceUID']}>".encode() in both.content

    for output in outputs:
        source = output["sourceSeriesInstanceUID"]
        for pick in (source, output["seriesInstanceUID"]):
            one = api.get(f"/jobs/{job_id}/result", params={"format": "seg", "series": pick})
            assert one.status_code == 200 and one.headers["content-type"] == "application/dicom"
            seg = pydicom.dcmread(io.BytesIO(one.content))
            assert seg.SOPInstanceUID == output["sopInstanceUID"]
            assert _referenced(seg) == {source: series[source]}
        path = tmp_path / f"{output['sopInstanceUID']}.dcm"
        path.write_bytes(one.content)
        assert dciodvfy_errors(path) == []
        found = requests.get(
            f"{pacs.orthanc.dicomweb}/studies/{study_uid}/series/{output['seriesInstanceUID']}"
            "/instances",
            auth=(pacs.orthanc.user, pacs.orthanc.password),
            headers={"Accept": "application/dicom+json"},
            timeout=10,
        ).json()
        assert [item["00080018"]["Value"][0] for item in found] == [output["sopInstanceUID"]]

    other = api.get(f"/jobs/{job_id}/result", params={"format": "seg", "series": "1.2.3"})
    assert other.status_code == 404
    assert other.json()["code"] == "result_object_not_found"


def test_storing_a_running_job_is_409_job_not_succeeded(api: TestClient, pacs: PacsData) -> None:
    item = pacs.ct_small
    url = f"/segmentations/{Ids.SLOW_MODEL}/studies/{item.study_uid}/series/{item.series_uid}"
    started = api.get(url, headers={"Prefer": "respond-async", "Cache-Control": "no-cache"})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    deadline = time.monotonic() + 10
    while api.get(f"/jobs/{job_id}").json()["state"] != "inferring":  # the model is slow
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        response = api.post(f"/jobs/{job_id}/store")
        assert response.status_code == 409
        assert response.json() == {
            "code": "job_not_succeeded",
            "message": f"job {job_id} is inferring: only a succeeded job is stored",
            "jobId": job_id,
        }
    finally:
        api.delete(f"/jobs/{job_id}")
