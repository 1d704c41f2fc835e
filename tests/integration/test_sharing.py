"""Which requests share a job and a stored answer, through the real stack: undeclared data
filters do not make a new job, and a changed configuration does not get yesterday's answer."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from tests.support.deployment import PACS_PASSWORD_ENV, Deployment, Ids, PacsData

pytestmark = pytest.mark.integration


def _model_calls(model_log: str) -> int:
    return len(requests.get(model_log, timeout=5).json()["recent"])


def _junk() -> dict[str, str]:
    return {"dataKey": "junk", "uuid": f"1.2.{secrets.randbelow(10**12)}"}


def test_requests_differing_only_in_undeclared_filters_share_one_job(
    deployment: Deployment, worker: ManagedProcess, pacs: PacsData, model_log: str
) -> None:
    declared = [
        {"dataKey": "series-one", "uuid": pacs.series_a[0].series_uid},
        {"dataKey": "series-two", "uuid": pacs.series_b[0].series_uid},
    ]
    url = f"/segmentations/{Ids.STUDY_FILTERS}/studies/{pacs.study_uid}"
    with TestClient(create_app(deployment.settings, environ=deployment.environ)) as api:
        first = api.get(
            url,
            params={"data-filters": json.dumps([*declared, _junk()])},
            headers={"Cache-Control": "no-cache"},
        )
        second = api.get(url, params={"data-filters": json.dumps([_junk(), *declared])})

    assert first.status_code == second.status_code == 200, second.text
    assert second.headers["x-job-id"] == first.headers["x-job-id"]
    assert _model_calls(model_log) == 1


def _app(deployment: Deployment, workdir: Path, **changes: Any) -> TestClient:
    """The API on a copy of the configuration with the model's or server's entry changed."""
    models = json.loads(deployment.settings.models_file.read_text())
    servers = json.loads(deployment.settings.servers_file.read_text())
    models[Ids.SEGMENTATION].update(changes.get("model", {}))
    servers[Ids.PACS].update(changes.get("server", {}))
    (workdir / "models.json").write_text(json.dumps(models))
    (workdir / "servers.json").write_text(json.dumps(servers))
    settings = deployment.settings.model_copy(
        update={"models_file": workdir / "models.json", "servers_file": workdir / "servers.json"}
    )
    environ = {**deployment.environ, **changes.get("environ", {})}
    return TestClient(create_app(settings, environ=environ))


@pytest.mark.parametrize(
    "change",
    [
        {"model": {"uri": "MODEL/segmentation?revision=2"}},
        {"server": {"uri": "PACS/"}},
        {"environ": {PACS_PASSWORD_ENV: "a-new-password"}},
    ],
    ids=["model-uri", "server-uri", "server-password"],
)
def test_a_changed_configuration_misses_the_cache(
    deployment: Deployment,
    worker: ManagedProcess,
    pacs: PacsData,
    tmp_path: Path,
    change: dict[str, dict[str, str]],
) -> None:
    series = pacs.series_b[0]
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{series.study_uid}/series/{series.series_uid}"
    with TestClient(create_app(deployment.settings, environ=deployment.environ)) as api:
        made = api.get(url, headers={"Cache-Control": "no-cache"})
        assert made.status_code == 200, made.text
        assert api.get(url).headers["x-job-id"] == made.headers["x-job-id"]

    placeholders = {"MODEL": deployment.model_url, "PACS": pacs.orthanc.dicomweb}
    resolved = {
        part: {k: _fill(v, placeholders) for k, v in fields.items()}
        for part, fields in change.items()
    }
    unchanged = {"server": {"statusUri": "http://127.0.0.1:9/status"}}
    with _app(deployment, tmp_path, **unchanged) as same:
        assert same.get(url).headers["x-job-id"] == made.headers["x-job-id"]
    with _app(deployment, tmp_path, **resolved) as changed:
        again = changed.get(url, params={"async": "true"})
    assert again.status_code == 202, again.text  # a new job, not the stored answer
    assert again.json()["id"] != made.headers["x-job-id"]


def _fill(value: str, placeholders: dict[str, str]) -> str:
    for name, replacement in placeholders.items():
        value = value.replace(name, replacement, 1) if value.startswith(name) else value
    return value
