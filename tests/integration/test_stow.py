"""STOW-RS into the real Orthanc through each auth type, and what a refused store reports.

Basic auth talks to Orthanc itself; ``token`` and ``zhivaAuth`` go through the test token server
in front of it, which passes the store on only with a valid access token. Each test stores into a
study of its own, so the session's other studies keep their instances.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.uid import generate_uid

from devtools.dicom import ct_series
from devtools.fault_proxy import Fault, FaultKind, FaultProxy
from devtools.redis_server import RedisServer
from model_proxy.shared.config import Catalog
from model_proxy.shared.config.schema import ServerConfig
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.dicomweb.stow import store_instances
from model_proxy.shared.errors import PacsStoreFailed
from model_proxy.workers.result_store import store_objects
from model_proxy.workers.retry import RetryPolicy
from tests.support.deployment import PacsData, start_token_server
from tests.support.derived import copy_in_new_series, read_header

pytestmark = pytest.mark.integration

BASIC = "7e0b1c2d-3333-4c5d-8e6f-000000000001"
ZHIVA = "7e0b1c2d-3333-4c5d-8e6f-000000000002"
TOKEN = "7e0b1c2d-3333-4c5d-8e6f-000000000003"
FAULTY = "7e0b1c2d-3333-4c5d-8e6f-000000000004"
USER = "stow-writer"
PASSWORD = "stow-Test-Pass-8812"


@pytest.fixture(scope="module")
def token_server(workdir: Path, pacs: PacsData) -> Iterator[str]:
    url, process = start_token_server(pacs, workdir / "stow-token-server.log")
    yield url
    process.stop()


@pytest.fixture(scope="module")
def fault_proxy(pacs: PacsData) -> Iterator[FaultProxy]:
    proxy = FaultProxy(pacs.orthanc.base)
    proxy.start()
    yield proxy
    proxy.stop()


def _auth_token(token_server: str) -> str:
    for path, body in (
        ("/_test/users", {"username": f"{USER}-token", "password": PASSWORD}),
        ("/_test/auth-token", {"username": f"{USER}-token"}),
    ):
        response = requests.post(f"{token_server}{path}", json=body, timeout=10)
        response.raise_for_status()
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def sessions(
    pacs: PacsData, redis_server: RedisServer, token_server: str, fault_proxy: FaultProxy
) -> Iterator[ServerSessions]:
    requests.post(
        f"{token_server}/_test/users", json={"username": USER, "password": PASSWORD}, timeout=10
    ).raise_for_status()
    basic = {"authType": "basicAuth", "login": pacs.orthanc.user, "password": pacs.orthanc.password}
    refresh = {
        "signInTokenServer": f"{token_server}/generate-access-token",
        "refreshServer": f"{token_server}/refresh-token",
    }
    servers = {
        BASIC: {"uri": pacs.orthanc.dicomweb, "isDefault": True, **basic},
        ZHIVA: {
            "uri": f"{token_server}/pacs",
            "authType": "zhivaAuth",
            "signInServer": f"{token_server}/sign-user",
            **refresh,
            "login": USER,
            "password": PASSWORD,
        },
        TOKEN: {
            "uri": f"{token_server}/pacs",
            "authType": "token",
            **refresh,
            "authToken": _auth_token(token_server),
        },
        FAULTY: {"uri": f"{fault_proxy.url}/dicom-web", **basic},
    }
    catalog = Catalog(
        servers={key: ServerConfig.model_validate(value) for key, value in servers.items()},
        models={},
        default_server_id=BASIC,
    )
    made = ServerSessions.for_checks(
        catalog,
        redis_server.url,
        timeout=10.0,
        refresh_margin=60.0,
        lock_timeout=10.0,
        redis_prefix="stow-test",
    )
    yield made
    made.close()


def new_study(pacs: PacsData, seed: int) -> list[bytes]:
    """A two-slice CT study of its own, uploaded to Orthanc; its files."""
    files = ct_series(study_uid=generate_uid(), slices=2, rows=16, columns=16, seed=seed)
    for item in files:
        pacs.orthanc.upload(item.data)
    return [item.data for item in files]


def series_of(pacs: PacsData, study_uid: str) -> set[str]:
    """The study's series UIDs, as QIDO-RS lists them."""
    response = pacs.orthanc.session.get(
        f"{pacs.orthanc.dicomweb}/studies/{study_uid}/series",
        headers={"Accept": "application/dicom+json"},
        timeout=10,
    )
    response.raise_for_status()
    return {item["0020000E"]["Value"][0] for item in response.json()}


def study_and_copy(pacs: PacsData, seed: int) -> tuple[str, str, bytes, list[bytes]]:
    """A new study's UID, a new series UID, a copy of its first slice in that series, and the
    study's files."""
    files = new_study(pacs, seed)
    series = generate_uid()
    return study_uid_of(files[0]), series, copy_in_new_series(files[0], series), files


def study_uid_of(data: bytes) -> str:
    return str(read_header(data).StudyInstanceUID)


def read_sop(data: bytes) -> str:
    return str(read_header(data).SOPInstanceUID)


@pytest.mark.parametrize("server", [BASIC, ZHIVA, TOKEN])
def test_a_copy_is_stored_into_its_study_with_each_auth_type(
    pacs: PacsData, sessions: ServerSessions, server: str
) -> None:
    source_files = new_study(pacs, seed=11)
    study = study_uid_of(source_files[0])
    series = generate_uid()
    copies = [copy_in_new_series(data, series) for data in source_files]

    result = store_instances(sessions.source_for(server), copies, study)

    assert result.status == 200
    assert result.ok and result.error() is None
    sops = [read_sop(data) for data in copies]
    assert [item.sop_instance_uid for item in result.stored] == sops
    assert all(
        sop in (item.retrieve_url or "") for item, sop in zip(result.stored, sops, strict=True)
    )
    assert series in series_of(pacs, study)
    for data, sop in zip(copies, sops, strict=True):
        held = pacs.orthanc.instance_bytes(study, series, sop)
        assert hashlib.sha256(held).hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_instance_of_another_study_is_refused_and_named(
    pacs: PacsData, sessions: ServerSessions
) -> None:
    study, series, good, files = study_and_copy(pacs, seed=12)
    stray = copy_in_new_series(files[1], series, study_uid=generate_uid())

    result = store_instances(sessions.source_for(BASIC), [good, stray], study)

    assert result.status in (202, 409)  # Orthanc says 409 when any instance failed
    assert [item.sop_instance_uid for item in result.stored] == [read_sop(good)]
    assert [(item.sop_instance_uid, item.reason) for item in result.failed] == [
        (read_sop(stray), 0x0110)
    ]
    error = result.error()
    assert error is not None and error.code == "pacs_store_failed"
    assert read_sop(stray) in error.message and read_sop(good) not in error.message
    with pytest.raises(PacsStoreFailed):
        result.raise_for_failures()
    assert series in series_of(pacs, study)


def test_a_part_that_is_not_dicom_is_reported_and_the_others_stored(
    pacs: PacsData, sessions: ServerSessions
) -> None:
    study, series, good, _ = study_and_copy(pacs, seed=13)

    result = store_instances(sessions.source_for(BASIC), [good, b"not a DICOM file"], study)

    assert result.status == 400  # Orthanc: a part it cannot read fails the request...
    assert [item.sop_instance_uid for item in result.stored] == [read_sop(good)]  # ...not all
    assert result.failed == () and result.unconfirmed == (None,)
    error = result.error()
    assert error is not None and error.code == "pacs_store_failed"
    assert error.message == (
        f"server {BASIC} did not store 1 of 2 instances (HTTP 400): a file that is not DICOM"
    )
    assert series in series_of(pacs, study)


def test_a_store_answered_409_lists_every_instance_failed(
    pacs: PacsData, sessions: ServerSessions, fault_proxy: FaultProxy
) -> None:
    files = new_study(pacs, seed=14)
    copy = copy_in_new_series(files[0], generate_uid())
    sop = read_sop(copy)
    answer = {
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                    "00081155": {"vr": "UI", "Value": [sop]},
                    "00081197": {"vr": "US", "Value": [0xA700]},
                }
            ],
        }
    }
    fault = Fault(
        FaultKind.STATUS,
        status=409,
        body=json.dumps(answer).encode(),
        content_type="application/dicom+json",
    )
    with fault_proxy.injecting(fault):
        result = store_instances(sessions.source_for(FAULTY), [copy])

    assert result.status == 409
    assert result.stored == ()
    assert [(item.sop_instance_uid, item.reason) for item in result.failed] == [(sop, 0xA700)]
    error = result.error()
    assert error is not None
    assert f"{sop} (0xA700 out of resources)" in error.message
    assert not error.transient


@pytest.mark.parametrize(("status", "transient"), [(400, False), (503, True)])
def test_a_store_refused_outright_raises_pacs_store_failed(
    pacs: PacsData,
    sessions: ServerSessions,
    fault_proxy: FaultProxy,
    status: int,
    transient: bool,
) -> None:
    files = new_study(pacs, seed=15)
    copy = copy_in_new_series(files[0], generate_uid())
    with (
        fault_proxy.injecting(Fault(FaultKind.STATUS, status=status)),
        pytest.raises(PacsStoreFailed) as caught,
    ):
        store_instances(sessions.source_for(FAULTY), [copy])
    assert caught.value.code == "pacs_store_failed"
    assert caught.value.transient is transient
    assert f"HTTP {status}" in caught.value.message and read_sop(copy) in caught.value.message
    assert pacs.orthanc.password not in caught.value.message


def _quick_retries() -> RetryPolicy:
    return RetryPolicy(
        first_delay=0.01, max_delay=0.01, total_delay=1.0, max_attempts=3, random=lambda: 0.0
    )


def test_a_job_store_tried_again_after_a_transient_failure_stores_its_object(
    pacs: PacsData, sessions: ServerSessions, fault_proxy: FaultProxy
) -> None:
    study, _, copy, _ = study_and_copy(pacs, seed=21)
    fault_proxy.set(Fault(FaultKind.STATUS, status=503))
    waits: list[float] = []

    def wait(seconds: float) -> None:  # the PACS is back when the retry comes
        waits.append(seconds)
        fault_proxy.clear()

    try:
        kept = store_objects(
            "job-21",
            {"seg": copy},
            sessions.source_for(FAULTY),
            study,
            _quick_retries(),
            lambda: 60.0,
            wait,
        )
    finally:
        fault_proxy.clear()

    assert len(waits) == 1 and kept.error is None
    (output,) = kept.outputs
    assert output.stored and output.server == FAULTY
    assert output.sop_instance_uid == read_sop(copy)
    assert output.series_instance_uid in series_of(pacs, study)


def test_a_job_store_the_pacs_refuses_is_recorded_without_a_retry(
    pacs: PacsData, sessions: ServerSessions, fault_proxy: FaultProxy
) -> None:
    study, series, copy, _ = study_and_copy(pacs, seed=22)
    with fault_proxy.injecting(Fault(FaultKind.STATUS, status=409, body=b"")):
        hits = fault_proxy.hits
        kept = store_objects(
            "job-22",
            {"sr": copy},
            sessions.source_for(FAULTY),
            study,
            _quick_retries(),
            lambda: 60.0,
            lambda seconds: pytest.fail("a refused store is not retried"),
        )
        assert fault_proxy.hits == hits + 1
    (output,) = kept.outputs
    assert not output.stored and output.format == "sr"
    assert kept.error is not None and kept.error.code == "pacs_store_failed"
    assert read_sop(copy) in kept.error.message
    assert series not in series_of(pacs, study)


def test_a_job_store_past_its_deadline_is_not_retried(
    pacs: PacsData, sessions: ServerSessions, fault_proxy: FaultProxy
) -> None:
    study, _, copy, _ = study_and_copy(pacs, seed=23)
    with fault_proxy.injecting(Fault(FaultKind.STATUS, status=503)):
        kept = store_objects(
            "job-23",
            {"seg": copy},
            sessions.source_for(FAULTY),
            study,
            _quick_retries(),
            lambda: 0.001,
            lambda seconds: pytest.fail("no time left for a retry"),
        )
    assert kept.error is not None and kept.error.code == "pacs_store_failed"
    assert not kept.outputs[0].stored
