"""Our outputs are not inputs: a study-level request sends the model the study's image series,
not its SR, SEG or other non-image series, unless the model's entry asks for them."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import requests
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from devtools.dicom import ct_series
from devtools.redis_server import RedisServer
from tests.support.deployment import Ids, PacsData
from tests.support.derived import read_header, text_report

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def study(pacs: PacsData) -> tuple[str, list[str], bytes]:
    """A study of its own: a CT series of three slices and an SR; (study, CT SOPs, SR)."""
    study_uid = generate_uid()
    ct = ct_series(study_uid=study_uid, slices=3, rows=16, columns=16, seed=21)
    report = text_report(study_uid)
    for data in [*(item.data for item in ct), report]:
        pacs.orthanc.upload(data)
    return study_uid, [item.sop_uid for item in ct], report


def sent_to_model(model_log: str) -> list[str]:
    recent: list[dict[str, Any]] = requests.get(model_log, timeout=5).json()["recent"]
    assert len(recent) == 1
    return [entry["sopInstanceUID"] for entry in recent[0]["instances"]]


def test_a_study_level_request_sends_only_the_image_series(
    api: TestClient, study: tuple[str, list[str], bytes], model_log: str
) -> None:
    study_uid, ct_sops, _ = study
    response = api.get(f"/segmentations/{Ids.SEGMENTATION}/studies/{study_uid}")
    assert response.status_code == 200, response.text
    assert sorted(sent_to_model(model_log)) == sorted(ct_sops)


def test_a_model_that_asks_for_non_image_series_gets_them(
    api: TestClient, study: tuple[str, list[str], bytes]
) -> None:
    study_uid, _, report = study
    response = api.get(f"/segmentations/{Ids.ALL_SERIES}/studies/{study_uid}")
    # the example model segments images: the SR it was sent has none, so it refuses the body
    sop = str(read_header(report).SOPInstanceUID)
    assert response.status_code == 502
    assert response.json()["code"] == "model_error"
    assert f"instance {sop} has no pixel data" in response.json()["message"]


def test_a_series_the_viewer_names_is_sent_whatever_its_modality(
    api: TestClient, study: tuple[str, list[str], bytes]
) -> None:
    study_uid, _, report = study
    header = read_header(report)
    path = f"/annotations/{Ids.ANNOTATION}/studies/{study_uid}/series/{header.SeriesInstanceUID}"
    response = api.get(path)
    assert response.status_code == 502
    assert f"instance {header.SOPInstanceUID} has no pixel data" in response.json()["message"]


@pytest.fixture(scope="module")
def study_with_our_seg(pacs: PacsData, api: TestClient) -> tuple[str, list[str], str, str]:
    """A CT study into which a job of ours stored its SEG; (study, CT SOPs, SEG series, SEG)."""
    study_uid = generate_uid()
    ct = ct_series(study_uid=study_uid, slices=2, rows=16, columns=16, seed=23)
    for item in ct:
        pacs.orthanc.upload(item.data)
    response = api.get(f"/segmentations/{Ids.SEG_OBJECTS}/studies/{study_uid}")
    assert response.status_code == 200, response.text
    (output,) = api.get(f"/jobs/{response.headers['X-Job-Id']}").json()["outputs"]
    assert output["stored"] is True
    return (
        study_uid,
        [item.sop_uid for item in ct],
        output["seriesInstanceUID"],
        output["sopInstanceUID"],
    )


def test_the_series_we_stored_are_remembered_per_study_for_a_bounded_time(
    study_with_our_seg: tuple[str, list[str], str, str], redis_server: RedisServer
) -> None:
    study_uid, _, seg_series, _ = study_with_our_seg
    client = redis.Redis.from_url(redis_server.url)
    (key,) = client.scan_iter(f"*:own-series:{study_uid}")
    assert client.smembers(key) == {seg_series.encode()}
    assert 29 * 86400 < client.ttl(key) <= 30 * 86400


def test_a_model_taking_non_image_series_is_not_sent_our_own_seg(
    api: TestClient, study_with_our_seg: tuple[str, list[str], str, str], model_log: str
) -> None:
    study_uid, ct_sops, _, _ = study_with_our_seg
    response = api.get(f"/segmentations/{Ids.ALL_SERIES}/studies/{study_uid}")
    assert response.status_code == 200, response.text
    assert sorted(sent_to_model(model_log)) == sorted(ct_sops)


def test_a_model_asking_for_our_own_results_is_sent_our_seg(
    api: TestClient, study_with_our_seg: tuple[str, list[str], str, str], model_log: str
) -> None:
    study_uid, ct_sops, _, seg_sop = study_with_our_seg
    api.get(f"/segmentations/{Ids.OWN_RESULTS}/studies/{study_uid}")
    assert sorted(sent_to_model(model_log)) == sorted([*ct_sops, seg_sop])


@pytest.mark.parametrize("model_id", [Ids.SEGMENTATION, Ids.ALL_SERIES])
def test_a_study_progress_counts_only_the_series_sent_and_reaches_its_total(
    api: TestClient, study_with_our_seg: tuple[str, list[str], str, str], model_id: str
) -> None:
    """The study holds a CT series and our SEG, which no model here is sent: the job's total
    is the CT series' instances (not the study's), and its fetch reaches it."""
    study_uid, ct_sops, _, _ = study_with_our_seg
    response = api.get(
        f"/segmentations/{model_id}/studies/{study_uid}", headers={"Cache-Control": "no-cache"}
    )
    assert response.status_code == 200, response.text
    progress = api.get(f"/jobs/{response.headers['X-Job-Id']}").json()["progress"]
    assert progress["instancesTotal"] == len(ct_sops) == 2
    assert progress["instancesFetched"] == len(ct_sops)
