"""A PACS over HTTPS with a self-signed certificate: verified by default, with a way out."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess, free_port, wait_until
from model_proxy.broker.app import create_app
from model_proxy.tls import write_self_signed
from tests.support.deployment import Deployment, Ids, PacsData, start_worker

pytestmark = pytest.mark.integration

VERIFIED = "7c2e5b3a-3333-4c8d-9e3f-000000000001"
OPTED_OUT = "7c2e5b3a-3333-4c8d-9e3f-000000000002"
WITH_CA = "7c2e5b3a-3333-4c8d-9e3f-000000000003"


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
def tls_api(
    deployment: Deployment, pacs: PacsData, https_pacs: tuple[str, Path]
) -> Iterator[TestClient]:
    uri, cert = https_pacs
    here = cert.parent
    basic = {"authType": "basicAuth", "login": pacs.orthanc.user, "password": pacs.orthanc.password}
    servers = {
        VERIFIED: {"uri": uri, "isDefault": True, **basic},
        OPTED_OUT: {"uri": uri, **basic, "tlsVerify": False},
        WITH_CA: {"uri": uri, **basic, "caBundle": str(cert)},
    }
    (here / "servers.json").write_text(json.dumps(servers))
    environ = {
        **deployment.environ,
        "MODEL_PROXY_SERVERS_FILE": str(here / "servers.json"),
        "MODEL_PROXY_QUEUE_NAME": "tls",
    }
    settings = deployment.settings.model_copy(
        update={"servers_file": here / "servers.json", "queue_name": "tls"}
    )
    local = Deployment(settings, environ, here, deployment.model_url, deployment.redis)
    worker = start_worker(local, "tls-worker", concurrency=2)
    app = create_app(settings, environ=environ)
    with TestClient(app, headers={"Cache-Control": "no-cache"}) as client:
        yield client
    worker.stop()


def path(pacs: PacsData) -> str:
    item = pacs.series_b[0]
    return f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"


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
