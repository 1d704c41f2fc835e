"""A PACS and a model over HTTPS with a self-signed certificate: verified by default, with a way
out (``tlsVerify`` false, or the certificate as ``caBundle``) in servers.json and models.json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess, free_port, start_service, wait_until
from model_proxy.shared.config import ModelConfig
from model_proxy.shared.probe import probe_model
from model_proxy.tls import write_self_signed
from tests.support.deployment import Deployment, Ids, PacsData, own_api_and_worker

pytestmark = pytest.mark.integration

VERIFIED = "7c2e5b3a-3333-4c8d-9e3f-000000000001"
OPTED_OUT = "7c2e5b3a-3333-4c8d-9e3f-000000000002"
WITH_CA = "7c2e5b3a-3333-4c8d-9e3f-000000000003"
MODEL_VERIFIED = "7c2e5b3a-4444-4c8d-9e3f-000000000001"
MODEL_OPTED_OUT = "7c2e5b3a-4444-4c8d-9e3f-000000000002"
MODEL_WITH_CA = "7c2e5b3a-4444-4c8d-9e3f-000000000003"


@pytest.fixture(scope="module")
def https_pacs(workdir: Path, pacs: PacsData) -> Iterator[tuple[str, Path]]:
    here = workdir / "tls"
    here.mkdir()
    cert, key = here / "pacs.crt", here / "pacs.key"
    write_self_signed(cert, key, ["localhost", "127.0.0.1"])
    port = free_port()
    process = ManagedProcess(
        "tls-proxy",
        [
            sys.executable,
            "-m",
            "tests.support.tls_proxy",
            str(port),
            pacs.orthanc.base,
            str(cert),
            str(key),
        ],
        here / "tls-proxy.log",
    )
    url = f"https://127.0.0.1:{port}"
    wait_until(
        lambda: (
            requests.get(
                f"{url}/system",
                verify=str(cert),
                timeout=1,
                auth=(pacs.orthanc.user, pacs.orthanc.password),
            ).ok
        ),
        30,
        "TLS proxy",
        alive=lambda: process.alive,
    )
    yield f"{url}/dicom-web", cert
    process.stop()


@pytest.fixture(scope="module")
def https_model(https_pacs: tuple[str, Path]) -> Iterator[str]:
    """The example model served by uvicorn over HTTPS, with the PACS's self-signed certificate."""
    _, cert = https_pacs
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "model_proxy.example_model.app:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(cert.with_suffix(".key")),
    ]  # fmt: skip
    process = start_service(
        "https-model", argv, cert.parent / "https-model.log", f"{url}/health", verify=str(cert)
    )
    yield f"{url}/segmentation"
    process.stop()


@pytest.fixture(scope="module")
def tls_api(
    deployment: Deployment, pacs: PacsData, https_pacs: tuple[str, Path], https_model: str
) -> Iterator[TestClient]:
    uri, cert = https_pacs
    here = cert.parent
    basic = {"authType": "basicAuth", "login": pacs.orthanc.user, "password": pacs.orthanc.password}
    servers = {
        VERIFIED: {"uri": uri, "isDefault": True, **basic},
        OPTED_OUT: {"uri": uri, **basic, "tlsVerify": False},
        WITH_CA: {"uri": uri, **basic, "caBundle": str(cert)},
    }
    model = {"uri": https_model, "task": "segmentation", "supports": ["/studies/series"]}
    models = {
        Ids.SEGMENTATION: json.loads(deployment.settings.models_file.read_text())[Ids.SEGMENTATION],
        MODEL_VERIFIED: model,
        MODEL_OPTED_OUT: {**model, "tlsVerify": False},
        MODEL_WITH_CA: {**model, "caBundle": str(cert)},
    }
    with own_api_and_worker(deployment, here, "tls", servers=servers, models=models) as client:
        yield client


def path(pacs: PacsData, model: str = Ids.SEGMENTATION) -> str:
    item = pacs.series_b[0]
    return f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}"


def test_a_self_signed_pacs_is_refused_by_default_naming_the_settings(
    tls_api: TestClient, pacs: PacsData
) -> None:
    response = tls_api.get(path(pacs), params={"server": VERIFIED})

    assert response.status_code == 502
    message = response.json()["message"]
    assert VERIFIED in message
    assert "caBundle" in message and "tlsVerify" in message


@pytest.mark.parametrize("server", [OPTED_OUT, WITH_CA])
def test_opting_out_or_naming_the_ca_retrieves_the_series(
    tls_api: TestClient, pacs: PacsData, server: str
) -> None:
    response = tls_api.get(path(pacs), params={"server": server})

    assert response.status_code == 200, response.text
    frames = response.json()[pacs.study_uid][pacs.series_b[0].series_uid]
    assert {k for k in frames if k != "metadata"} == {i.sop_uid for i in pacs.series_b}


def test_a_self_signed_model_is_refused_by_default_naming_the_settings(
    tls_api: TestClient, pacs: PacsData
) -> None:
    response = tls_api.get(path(pacs, MODEL_VERIFIED), params={"server": OPTED_OUT})

    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "model_unreachable"
    assert MODEL_VERIFIED in body["message"] and "models.json" in body["message"]
    assert "caBundle" in body["message"] and "tlsVerify" in body["message"]


@pytest.mark.parametrize("model", [MODEL_OPTED_OUT, MODEL_WITH_CA])
def test_a_model_opting_out_or_naming_the_ca_answers(
    tls_api: TestClient, pacs: PacsData, model: str
) -> None:
    response = tls_api.get(path(pacs, model), params={"server": OPTED_OUT})

    assert response.status_code == 200, response.text
    frames = response.json()[pacs.study_uid][pacs.series_b[0].series_uid]
    assert {k for k in frames if k != "metadata"} == {i.sop_uid for i in pacs.series_b}


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # tlsVerify false
def test_a_models_status_check_uses_its_tls_settings(
    https_model: str, https_pacs: tuple[str, Path]
) -> None:
    _, cert = https_pacs
    health = https_model.replace("/segmentation", "/health")
    model = {"uri": https_model, "task": "segmentation", "supports": ["/studies"]}

    def check(**tls: object) -> tuple[str, str | None]:
        status = probe_model(ModelConfig.model_validate({**model, "statusUri": health, **tls}), 5)
        return status.status, status.error

    status, error = check()
    assert status == "down" and error is not None
    assert "models.json" in error and "caBundle" in error and "tlsVerify" in error
    assert check(tlsVerify=False) == ("up", None)
    assert check(caBundle=str(cert)) == ("up", None)
