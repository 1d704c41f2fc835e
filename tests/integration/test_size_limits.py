"""Size caps through the real stack: Orthanc, Redis, a worker process and the example model.

models.json entries with tiny ``maxInstanceBytes``, ``maxInputBytes`` and ``maxAnswerBytes``
make a small series and a small answer too large; each job fails with its code (never a 500,
never the answer stored), and the next job on the same worker succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.deployment import Deployment, PacsData, own_api_and_worker

pytestmark = pytest.mark.integration

TINY_INSTANCE = "5c0a1b2c-1111-4a4b-8c5d-000000000001"
TINY_INPUT = "5c0a1b2c-1111-4a4b-8c5d-000000000002"
TINY_ANSWER = "5c0a1b2c-1111-4a4b-8c5d-000000000003"
ROOMY = "5c0a1b2c-1111-4a4b-8c5d-000000000004"
MULTIPART_TINY_INSTANCE = "5c0a1b2c-1111-4a4b-8c5d-000000000005"
MULTIPART_TINY_INPUT = "5c0a1b2c-1111-4a4b-8c5d-000000000006"
INSTANCE_BYTES = 64 * 64 * 2  # the pixel data alone of one slice of series_a


@pytest.fixture(scope="module")
def capped_api(deployment: Deployment) -> Iterator[TestClient]:
    here = deployment.workdir / "size-limits"
    here.mkdir()
    model = {
        "uri": f"{deployment.model_url}/segmentation",
        "task": "segmentation",
        "supports": ["/studies/series"],
    }
    models = {
        TINY_INSTANCE: {**model, "maxInstanceBytes": 1000},
        # more than one slice, less than the series of six
        TINY_INPUT: {**model, "maxInputBytes": 3 * INSTANCE_BYTES},
        TINY_ANSWER: {**model, "maxAnswerBytes": 100},
        ROOMY: {**model, "maxInstanceBytes": 100_000, "maxInputBytes": 1_000_000},
        # the caps apply whatever the transport
        MULTIPART_TINY_INSTANCE: {**model, "maxInstanceBytes": 1000, "transport": "multipart"},
        MULTIPART_TINY_INPUT: {
            **model,
            "maxInputBytes": 3 * INSTANCE_BYTES,
            "transport": "multipart",
        },
    }
    with own_api_and_worker(
        deployment, here, "size-limits", models=models, concurrency=1
    ) as client:
        yield client


def series_path(model: str, pacs: PacsData) -> str:
    item = pacs.series_a[0]
    return f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}"


def assert_failed_then_next_job_succeeds(
    client: TestClient, pacs: PacsData, model: str, code: str, setting: str
) -> None:
    response = client.get(series_path(model, pacs))

    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == code
    assert setting in body["message"]
    job = client.get(f"/jobs/{body['jobId']}").json()
    assert job["state"] == "failed"
    assert job["error"]["code"] == code
    assert job["attempts"] == 1  # not retried: the same call would fail the same way
    result = client.get(f"/jobs/{job['id']}/result")
    assert result.status_code == 502 and result.json()["code"] == code

    # the same worker (concurrency 1) runs the next job to its end
    following = client.get(series_path(ROOMY, pacs))
    assert following.status_code == 200, following.text
    assert pacs.series_a[0].series_uid in following.json()[pacs.study_uid]


@pytest.mark.parametrize(
    "model", [TINY_INSTANCE, MULTIPART_TINY_INSTANCE], ids=["json", "multipart"]
)
def test_an_instance_over_max_instance_bytes_fails_the_job(
    capped_api: TestClient, pacs: PacsData, model: str
) -> None:
    assert_failed_then_next_job_succeeds(
        capped_api, pacs, model, "pacs_instance_too_large", "maxInstanceBytes"
    )


@pytest.mark.parametrize("model", [TINY_INPUT, MULTIPART_TINY_INPUT], ids=["json", "multipart"])
def test_a_series_over_max_input_bytes_fails_the_job(
    capped_api: TestClient, pacs: PacsData, model: str
) -> None:
    assert_failed_then_next_job_succeeds(
        capped_api, pacs, model, "input_too_large", "maxInputBytes"
    )


def test_an_answer_over_max_answer_bytes_fails_the_job(
    capped_api: TestClient, pacs: PacsData
) -> None:
    assert_failed_then_next_job_succeeds(
        capped_api, pacs, TINY_ANSWER, "model_answer_too_large", "maxAnswerBytes"
    )


def test_the_same_series_passes_under_roomy_caps(capped_api: TestClient, pacs: PacsData) -> None:
    """The caps above fail because they are small, not because the series is bad."""
    response = capped_api.get(series_path(ROOMY, pacs))
    assert response.status_code == 200, response.text
