"""Every bad input and every failing part gives a clear JSON error with a stable code."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devtools.processes import free_port
from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings
from tests.support.deployment import Deployment, Ids, PacsData

pytestmark = pytest.mark.integration


def assert_error(response: object, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body: dict[str, str] = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code
    assert body["message"]
    return body


def test_unknown_model_is_404(api: TestClient, pacs: PacsData) -> None:
    response = api.get(
        f"/segmentations/00000000-0000-4000-8000-000000000000/studies/{pacs.study_uid}"
    )
    assert assert_error(response, 404, "unknown_model")["message"].startswith("Not found")


def test_unknown_server_is_404_and_never_falls_back_to_the_default(
    api: TestClient, pacs: PacsData
) -> None:
    response = api.get(
        f"/segmentations/{Ids.SEGMENTATION}/studies/{pacs.study_uid}",
        params={"server": "00000000-0000-4000-8000-000000000000"},
    )
    assert_error(response, 404, "unknown_server")


def test_unknown_route_is_404_json(api: TestClient) -> None:
    assert_error(api.get("/segmentation/x/studies/1.2"), 404, "not_found")


def test_a_level_the_model_does_not_support_is_404_naming_the_supported_ones(
    api: TestClient, pacs: PacsData
) -> None:
    response = api.get(f"/segmentations/{Ids.SERIES_ONLY}/studies/{pacs.study_uid}")
    body = assert_error(response, 404, "level_not_supported")
    assert "/studies/series" in body["message"]


@pytest.mark.parametrize(
    "bad_uid", ["1.2.abc", "1.2..3", "1" * 65, "...", "..%5Csystem", "1.2;rm", "1.2 3", "-1.2"]
)
def test_a_uid_that_is_not_a_dicom_uid_is_422(api: TestClient, bad_uid: str) -> None:
    response = api.get(f"/segmentations/{Ids.SEGMENTATION}/studies/1.2.3/series/{bad_uid}")
    assert_error(response, 422, "invalid_uid")


def test_a_series_the_pacs_does_not_have_is_404(api: TestClient, pacs: PacsData) -> None:
    response = api.get(
        f"/segmentations/{Ids.SEGMENTATION}/studies/{pacs.study_uid}/series/1.2.3.4.5.6.7.8.9"
    )
    assert_error(response, 404, "dicom_not_found")


def test_refused_credentials_are_502_naming_the_server_without_secrets(
    api: TestClient, pacs: PacsData
) -> None:
    response = api.get(
        f"/segmentations/{Ids.SEGMENTATION}/studies/{pacs.study_uid}",
        params={"server": Ids.PACS_WRONG_PASSWORD},
    )
    body = assert_error(response, 502, "pacs_auth_failed")
    assert Ids.PACS_WRONG_PASSWORD in body["message"]
    assert "not-the-Password-71" not in response.text
    assert pacs.orthanc.user not in response.text


def test_an_unreachable_pacs_is_502(api: TestClient, pacs: PacsData) -> None:
    response = api.get(
        f"/segmentations/{Ids.SEGMENTATION}/studies/{pacs.study_uid}",
        params={"server": Ids.PACS_UNREACHABLE},
    )
    assert_error(response, 502, "pacs_unreachable")


def test_a_pacs_that_does_not_answer_in_time_is_504(api: TestClient, pacs: PacsData) -> None:
    response = api.get(
        f"/segmentations/{Ids.SEGMENTATION}/studies/{pacs.study_uid}",
        params={"server": Ids.PACS_SLOW},
    )
    assert_error(response, 504, "pacs_timeout")


def test_a_failing_model_is_502_with_its_status(api: TestClient, pacs: PacsData) -> None:
    response = api.get(f"/segmentations/{Ids.FAILING}/studies/{pacs.study_uid}")
    body = assert_error(response, 502, "model_error")
    assert "HTTP 500" in body["message"]


def test_an_unreachable_model_is_502(api: TestClient, pacs: PacsData) -> None:
    response = api.get(f"/segmentations/{Ids.MODEL_UNREACHABLE}/studies/{pacs.study_uid}")
    assert_error(response, 502, "model_unreachable")


def test_a_model_that_does_not_answer_in_time_is_504(api: TestClient, pacs: PacsData) -> None:
    item = pacs.ct_small
    response = api.get(
        f"/segmentations/{Ids.SLOW_MODEL}/studies/{item.study_uid}/series/{item.series_uid}"
    )
    assert_error(response, 504, "model_timeout")


def test_redis_unreachable_is_503(deployment: Deployment, pacs: PacsData, tmp_path: Path) -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        servers_file=deployment.settings.servers_file,
        models_file=deployment.settings.models_file,
    )
    app = create_app(settings, environ=deployment.environ)
    with TestClient(app) as client:
        response = client.get(f"/segmentations/{Ids.SEGMENTATION}/studies/{pacs.study_uid}")
    assert_error(response, 503, "redis_unavailable")
