"""A model written by someone else to the contract works unchanged behind model-proxy."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from devtools.processes import start_on_free_port
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, PacsData, start_worker

pytestmark = pytest.mark.integration

SERIES_MODEL = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
FILTER_MODEL = "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b"
INSTANCE_MODEL = "3b4c5d6e-7f80-4912-8b2c-3d4e5f6a7b8c"


@pytest.fixture(scope="module")
def contract_model(deployment: Deployment) -> Iterator[str]:
    url, process = start_on_free_port(
        "contract-model",
        lambda port: [sys.executable, "-m", "tests.support.contract_model", str(port)],
        deployment.workdir / "contract-model.log",
        "/docs",
    )
    yield url
    process.stop()


@pytest.fixture(scope="module")
def third_party(
    deployment: Deployment, contract_model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """The deployment with a models.json that names the third-party model, and its own worker."""
    workdir: Path = tmp_path_factory.mktemp("third-party")
    models = json.loads((deployment.workdir / "models.json").read_text())
    models.update(
        {
            SERIES_MODEL: {
                "uri": f"{contract_model}/single-series-endpoint/predict",
                "task": "prediction",
                "supports": ["/studies/series"],
            },
            FILTER_MODEL: {
                "uri": f"{contract_model}/multiple-series-endpoint/predict",
                "task": "prediction",
                "supports": ["/studies"],
                "dataFilter": [
                    {"dataKey": "series-one", "title": "One"},
                    {"dataKey": "series-two", "title": "Two"},
                ],
            },
            INSTANCE_MODEL: {
                "uri": f"{contract_model}/single-instance-endpoint/predict",
                "task": "prediction",
                "supports": ["/studies/series/instances"],
            },
        }
    )
    (workdir / "models.json").write_text(json.dumps(models))
    environ = {
        **deployment.environ,
        "MODEL_PROXY_MODELS_FILE": str(workdir / "models.json"),
        "MODEL_PROXY_QUEUE_NAME": "third-party",
    }
    local = Deployment(
        deployment.settings.model_copy(
            update={"models_file": workdir / "models.json", "queue_name": "third-party"}
        ),
        environ,
        workdir,
        deployment.model_url,
        deployment.redis,
    )
    worker = start_worker(local, "third-party-worker", concurrency=2)
    app = create_app(local.settings, environ=environ)
    with TestClient(app, headers={"Cache-Control": "no-cache"}) as client:
        yield client
    worker.stop()


def rows_by_instance(
    document: dict[str, dict[str, dict[str, dict[str, list[dict[str, int]]]]]],
) -> dict[str, int]:
    return {
        sop: frame["metadata"][0]["value"]
        for series in document.values()
        for frames in series.values()
        for sop, frame in frames.items()
    }


def test_series_model_with_a_typed_list_body(third_party: TestClient, pacs: PacsData) -> None:
    item = pacs.series_b[0]
    response = third_party.get(
        f"/predictions/{SERIES_MODEL}/studies/{item.study_uid}/series/{item.series_uid}"
    )
    assert response.status_code == 200, response.text
    assert rows_by_instance(response.json()) == {i.sop_uid: i.rows for i in pacs.series_b}


def test_data_filter_model_with_a_typed_dict_body(third_party: TestClient, pacs: PacsData) -> None:
    filters = [
        {"dataKey": "series-one", "uuid": pacs.series_a[0].series_uid},
        {"dataKey": "series-two", "uuid": pacs.series_b[0].series_uid},
    ]
    response = third_party.get(
        f"/predictions/{FILTER_MODEL}/studies/{pacs.study_uid}",
        params={"data-filters": json.dumps(filters)},
    )
    assert response.status_code == 200, response.text
    assert rows_by_instance(response.json()) == {
        i.sop_uid: i.rows for i in pacs.series_a + pacs.series_b
    }


def test_instance_model_with_a_string_body(third_party: TestClient, pacs: PacsData) -> None:
    item = pacs.ct_small
    response = third_party.get(
        f"/predictions/{INSTANCE_MODEL}/studies/{item.study_uid}"
        f"/series/{item.series_uid}/instances/{item.sop_uid}"
    )
    assert response.status_code == 200, response.text
    assert rows_by_instance(response.json()) == {item.sop_uid: item.rows}
