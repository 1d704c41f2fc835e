"""The test pacs-token-server: the token flows of model-contract §4.1 and its streaming PACS proxy.

Token flows run in-process through TestClient; the proxy runs against a stub Orthanc (a plain
http.server that answers multipart without a length and closes the connection), and streaming is
checked through a real uvicorn because TestClient buffers whole responses.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
import uvicorn
from fastapi.testclient import TestClient

from devtools.processes import free_port, wait_until
from tests.support.token_server import TokenServerConfig, create_app

USER = "proxy-reader"
PASSWORD = "reader-Pass-4c1"
UPSTREAM_USER = "orthanc-user"
UPSTREAM_PASSWORD = "orthanc-Secret-77"
VIEWER = "https://viewer.example"
SERIES_PATH = "studies/1.2.3/series/4.5.6"
MULTIPART_TYPE = 'multipart/related; type="application/dicom"; boundary=BOUNDARY'
PART_ONE = b"--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\n" + b"\x01" * 70_000 + b"\r\n"
PART_TWO = b"--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\n" + b"\x02" * 50_000
CLOSING = b"\r\n--BOUNDARY--\r\n"


# -- a stub Orthanc --------------------------------------------------------------------------------


@dataclass
class StubOrthanc:
    base: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def orthanc() -> Iterator[StubOrthanc]:
    stub = StubOrthanc(base="")
    stub.release.set()

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: the body ends when the connection closes, as Orthanc frames multipart.
        def do_GET(self) -> None:
            self._answer(with_body=True)

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def _answer(self, with_body: bool) -> None:
            stub.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers)}
            )
            if self.path.startswith(f"/dicom-web/{SERIES_PATH}"):
                self.send_response(200)
                self.send_header("Content-Type", MULTIPART_TYPE)
                self.end_headers()
                if with_body:
                    self.wfile.write(PART_ONE)
                    self.wfile.flush()
                    stub.release.wait(10)
                    self.wfile.write(PART_TWO + CLOSING)
                return
            body = b'{"Message": "Unknown resource"}'
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield stub
    stub.release.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


# -- helpers ---------------------------------------------------------------------------------------


def config_for(upstream: str = "http://127.0.0.1:9", **overrides: Any) -> TokenServerConfig:
    return TokenServerConfig(
        upstream=upstream,
        upstream_user=UPSTREAM_USER,
        upstream_password=UPSTREAM_PASSWORD,
        **overrides,
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(config_for())) as test_client:
        add_user(test_client)
        yield test_client


@pytest.fixture
def proxied(orthanc: StubOrthanc) -> Iterator[TestClient]:
    with TestClient(create_app(config_for(orthanc.base))) as test_client:
        add_user(test_client)
        yield test_client


def add_user(client: TestClient, username: str = USER, password: str = PASSWORD) -> None:
    response = client.post("/_test/users", json={"username": username, "password": password})
    assert response.status_code == 200


def sign_in(client: TestClient, **extra: str) -> str:
    response = client.post("/sign-user", json={"username": USER, "password": PASSWORD, **extra})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def exchange(client: TestClient, auth_token: str, origin: str | None = None) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {auth_token}"}
    if origin:
        headers["Origin"] = origin
    response = client.post("/generate-access-token", headers=headers)
    assert response.status_code == 200, response.text
    return bearer(response.headers["authorization"]), response.text


def refresh(client: TestClient, refresh_token: str, origin: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {refresh_token}"}
    if origin:
        headers["Origin"] = origin
    response = client.post("/refresh-token", headers=headers)
    assert response.status_code == 200, response.text
    return bearer(response.headers["authorization"])


def bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    assert scheme == "Bearer"
    return token


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def set_config(client: TestClient, **values: Any) -> None:
    assert client.post("/_test/config", json=values).status_code == 200


def counters(client: TestClient) -> dict[str, int]:
    result: dict[str, int] = client.get("/_test/counters").json()
    return result


def pacs(client: TestClient, token: str | None, origin: str | None = None) -> Any:
    headers = {"Accept": 'multipart/related; type="application/dicom"'}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin:
        headers["Origin"] = origin
    return client.get(f"/pacs/{SERIES_PATH}", headers=headers)


INVALID = {"message": "Invalid Token"}
MISSING = {"message": "Missing Token"}
UNEXPECTED = {"message": "Unexpected error"}


# -- token flows -----------------------------------------------------------------------------------


def test_sign_in_exchange_refresh(client: TestClient) -> None:
    auth_token = sign_in(client)
    assert jwt.get_unverified_header(auth_token)["alg"] == "RS256"
    auth = claims(auth_token)
    assert auth["iss"] == "zhiva.ai"
    assert (auth["name"], auth["username"], auth["canEditResource"]) == (USER, USER, False)
    assert auth["exp"] - auth["iat"] == 24 * 3600
    assert "aud" not in auth

    response = client.post("/generate-access-token", headers={"Authorization": auth_token})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    access_token = bearer(response.headers["authorization"])
    refresh_token = response.text
    access, refreshing = claims(access_token), claims(refresh_token)
    assert access["username"] == refreshing["username"] == USER
    assert access["exp"] - access["iat"] == 24 * 3600
    assert refreshing["exp"] - refreshing["iat"] == 30 * 24 * 3600
    assert "aud" not in access

    answer = client.post("/refresh-token", headers={"Authorization": f"Bearer {refresh_token}"})
    assert answer.status_code == 200
    assert answer.content == b""
    new_access = bearer(answer.headers["authorization"])
    assert new_access != access_token
    assert claims(new_access)["username"] == USER

    issued = client.get("/_test/issued").json()["tokens"]
    assert issued == [auth_token, access_token, refresh_token, new_access]
    assert counters(client) == {
        "sign_in": 1,
        "sign_in_failed": 0,
        "exchange": 1,
        "exchange_failed": 0,
        "refresh": 1,
        "refresh_failed": 0,
        "pacs_ok": 0,
        "pacs_rejected": 0,
        "failed": 0,
    }


@pytest.mark.parametrize("prefix", ["", "Bearer ", "bearer ", "BEARER "])
def test_bearer_prefix_is_optional(client: TestClient, prefix: str) -> None:
    response = client.post(
        "/generate-access-token", headers={"Authorization": prefix + sign_in(client)}
    )
    assert response.status_code == 200


def test_sign_in_errors(client: TestClient) -> None:
    cases = [
        ({"username": USER, "password": "wrong"}, "Invalid data"),
        ({"username": "nobody", "password": PASSWORD}, "Invalid data"),
        ({"username": USER}, "Invalid data"),
        ({"password": PASSWORD}, "username not valid"),
    ]
    for body, message in cases:
        response = client.post("/sign-user", json=body)
        assert (response.status_code, response.json()) == (400, {"message": message})
    assert client.post("/sign-user", content=b"not json").status_code == 400
    assert counters(client)["sign_in_failed"] == counters(client)["failed"] == 5


def test_auth_token_is_one_off(client: TestClient) -> None:
    auth_token = sign_in(client)
    exchange(client, auth_token)
    again = client.post("/generate-access-token", headers={"Authorization": auth_token})
    assert (again.status_code, again.json()) == (403, INVALID)
    assert counters(client)["exchange_failed"] == 1


def test_a_new_sign_in_replaces_the_auth_token(client: TestClient) -> None:
    first, second = sign_in(client), sign_in(client)
    response = client.post("/generate-access-token", headers={"Authorization": first})
    assert (response.status_code, response.json()) == (403, INVALID)
    exchange(client, second)


def test_missing_token(client: TestClient) -> None:
    for path in ("/generate-access-token", "/refresh-token"):
        response = client.post(path)
        assert (response.status_code, response.json()) == (401, MISSING)


def test_refresh_token_is_not_rotated(client: TestClient) -> None:
    _, refresh_token = exchange(client, sign_in(client))
    tokens = {refresh(client, refresh_token) for _ in range(3)}
    assert len(tokens) == 3
    assert counters(client)["refresh"] == 3


def test_refresh_refuses_tokens_it_did_not_issue_as_refresh(client: TestClient) -> None:
    auth_token = sign_in(client)
    access_token, _ = exchange(client, auth_token)
    for token in (access_token, auth_token, "garbage"):
        response = client.post("/refresh-token", headers={"Authorization": f"Bearer {token}"})
        assert (response.status_code, response.json()) == (403, INVALID)


def test_a_jwt_that_does_not_verify_is_an_unexpected_error(client: TestClient) -> None:
    """The real server leaves jsonwebtoken's errors unmapped: 500, not 403."""
    response = client.post("/generate-access-token", headers={"Authorization": "Bearer x.y.z"})
    assert (response.status_code, response.json()) == (500, UNEXPECTED)


def test_aud_must_match_origin(client: TestClient) -> None:
    auth_token = sign_in(client, referer=VIEWER)
    assert claims(auth_token)["aud"] == VIEWER
    for origin in (None, "https://elsewhere.example"):
        headers = {"Authorization": auth_token} | ({"Origin": origin} if origin else {})
        response = client.post("/generate-access-token", headers=headers)
        assert (response.status_code, response.json()) == (403, INVALID)

    access_token, refresh_token = exchange(client, auth_token, origin=VIEWER)
    assert claims(access_token)["aud"] == claims(refresh_token)["aud"] == VIEWER
    response = client.post("/refresh-token", headers={"Authorization": refresh_token})
    assert (response.status_code, response.json()) == (403, INVALID)
    assert claims(refresh(client, refresh_token, origin=VIEWER))["aud"] == VIEWER


def test_origin_becomes_the_access_tokens_aud(client: TestClient) -> None:
    access_token, refresh_token = exchange(client, sign_in(client), origin=VIEWER)
    assert claims(access_token)["aud"] == VIEWER
    assert claims(refresh_token)["aud"] == VIEWER


def test_admin_issued_auth_token(client: TestClient) -> None:
    response = client.post("/_test/auth-token", json={"username": USER, "aud": VIEWER})
    auth_token = response.json()["token"]
    assert claims(auth_token)["aud"] == VIEWER
    exchange(client, auth_token, origin=VIEWER)
    unknown = client.post("/_test/auth-token", json={"username": "nobody"})
    assert unknown.status_code == 400


def test_expired_auth_and_refresh_tokens_are_unexpected_errors(client: TestClient) -> None:
    set_config(client, auth_ttl=0)
    response = client.post("/generate-access-token", headers={"Authorization": sign_in(client)})
    assert (response.status_code, response.json()) == (500, UNEXPECTED)

    set_config(client, auth_ttl=3600, refresh_ttl=0)
    _, refresh_token = exchange(client, sign_in(client))
    response = client.post("/refresh-token", headers={"Authorization": refresh_token})
    assert (response.status_code, response.json()) == (500, UNEXPECTED)
    assert counters(client)["failed"] == 2


def test_lifetimes_follow_the_runtime_config(client: TestClient) -> None:
    set_config(client, access_ttl=90, refresh_ttl=120.5, auth_ttl=30)
    auth_token = sign_in(client)
    access_token, refresh_token = exchange(client, auth_token)
    for token, ttl in ((auth_token, 30), (access_token, 90), (refresh_token, 120.5)):
        assert claims(token)["exp"] - claims(token)["iat"] == ttl


def test_a_token_of_a_few_seconds_lives_all_of_them(client: TestClient) -> None:
    set_config(client, access_ttl=2)
    issued = time.time()
    access_token, _ = exchange(client, sign_in(client))
    assert claims(access_token)["exp"] >= issued + 2


@pytest.mark.parametrize("bearer_prefix", [True, False])
def test_answer_in_the_authentication_header(client: TestClient, bearer_prefix: bool) -> None:
    set_config(client, header_name="Authentication", bearer_prefix=bearer_prefix)
    response = client.post("/generate-access-token", headers={"Authorization": sign_in(client)})
    assert "authorization" not in response.headers
    value = response.headers["authentication"]
    access_token = bearer(value) if bearer_prefix else value
    assert claims(access_token)["username"] == USER

    again = client.post("/refresh-token", headers={"Authorization": response.text})
    assert "authorization" not in again.headers
    assert again.headers["authentication"].startswith("Bearer ") is bearer_prefix


def test_config_is_validated(client: TestClient) -> None:
    assert client.post("/_test/config", json={"header_name": "X-Token"}).status_code == 422
    assert client.post("/_test/config", json={"acces_ttl": 5}).status_code == 422
    assert client.post("/_test/config", json={"delay": -1}).status_code == 422


def test_concurrent_exchanges_of_one_auth_token_succeed_once(client: TestClient) -> None:
    auth_token = sign_in(client)
    set_config(client, delay=0.3)
    statuses: list[int] = []

    def attempt() -> None:
        response = client.post("/generate-access-token", headers={"Authorization": auth_token})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(statuses) == [200, 403]
    assert time.monotonic() - started < 0.6  # the delays overlapped


def test_no_token_or_password_is_logged(
    proxied: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth_token = sign_in(proxied)
    access_token, refresh_token = exchange(proxied, auth_token)
    refresh(proxied, refresh_token)
    proxied.post("/generate-access-token", headers={"Authorization": auth_token})
    pacs(proxied, access_token)
    pacs(proxied, "forged")
    proxied.post("/sign-user", json={"username": USER, "password": "wrong-Pass-1"})
    secrets = [*proxied.get("/_test/issued").json()["tokens"], PASSWORD, "wrong-Pass-1"]
    assert len(secrets) == 6
    assert caplog.records
    for secret in [*secrets, UPSTREAM_PASSWORD]:
        assert secret not in caplog.text


# -- the PACS proxy --------------------------------------------------------------------------------


def test_pacs_forwards_with_basic_auth(proxied: TestClient, orthanc: StubOrthanc) -> None:
    access_token, _ = exchange(proxied, sign_in(proxied))
    response = proxied.get(
        f"/pacs/{SERIES_PATH}?includefield=all&limit=2",
        headers={
            "Authorization": f"Bearer {access_token}",
            "Accept": 'multipart/related; type="application/dicom"',
        },
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == MULTIPART_TYPE
    assert response.content == PART_ONE + PART_TWO + CLOSING

    (seen,) = orthanc.requests
    assert seen["path"] == f"/dicom-web/{SERIES_PATH}?includefield=all&limit=2"
    assert seen["headers"]["Accept"] == 'multipart/related; type="application/dicom"'
    basic = base64.b64encode(f"{UPSTREAM_USER}:{UPSTREAM_PASSWORD}".encode()).decode()
    assert seen["headers"]["Authorization"] == f"Basic {basic}"
    assert counters(proxied)["pacs_ok"] == 1


def test_pacs_passes_status_and_content_type_through(
    proxied: TestClient, orthanc: StubOrthanc
) -> None:
    access_token, _ = exchange(proxied, sign_in(proxied))
    headers = {"Authorization": f"Bearer {access_token}"}
    response = proxied.get("/pacs/studies/9.9.9", headers=headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"Message": "Unknown resource"}

    head = proxied.head(f"/pacs/{SERIES_PATH}", headers=headers)
    assert head.status_code == 200
    assert head.headers["content-type"] == MULTIPART_TYPE
    assert head.content == b""
    assert [seen["method"] for seen in orthanc.requests] == ["GET", "HEAD"]


def test_pacs_refuses_bad_tokens(proxied: TestClient, orthanc: StubOrthanc) -> None:
    auth_token = sign_in(proxied, referer=VIEWER)
    access_token, refresh_token = exchange(proxied, auth_token, origin=VIEWER)

    missing = pacs(proxied, None)
    assert (missing.status_code, missing.json()) == (401, MISSING)
    for token, origin in [
        ("forged.jwt.value", VIEWER),
        (refresh_token, VIEWER),
        (auth_token, VIEWER),
        (access_token, None),
        (access_token, "https://elsewhere.example"),
    ]:
        response = pacs(proxied, token, origin)
        assert (response.status_code, response.json()) == (403, INVALID)
    assert pacs(proxied, access_token, VIEWER).status_code == 200

    assert orthanc.requests and len(orthanc.requests) == 1
    assert counters(proxied)["pacs_rejected"] == 6
    assert counters(proxied)["pacs_ok"] == 1


def test_pacs_refuses_expired_access_tokens(proxied: TestClient) -> None:
    set_config(proxied, access_ttl=0)
    access_token, _ = exchange(proxied, sign_in(proxied))
    response = pacs(proxied, access_token)
    assert (response.status_code, response.json()) == (403, INVALID)


def test_revoked_access_tokens_are_refused_until_refreshed(proxied: TestClient) -> None:
    access_token, refresh_token = exchange(proxied, sign_in(proxied))
    assert pacs(proxied, access_token).status_code == 200
    assert proxied.post("/_test/revoke-access").json() == {"revoked": 1}
    assert pacs(proxied, access_token).status_code == 403
    assert pacs(proxied, refresh(proxied, refresh_token)).status_code == 200


def test_pacs_upstream_down_is_502() -> None:
    with TestClient(create_app(config_for(f"http://127.0.0.1:{free_port()}"))) as client:
        add_user(client)
        access_token, _ = exchange(client, sign_in(client))
        assert pacs(client, access_token).status_code == 502


def test_counters_reset(client: TestClient) -> None:
    sign_in(client)
    client.post("/sign-user", json={"username": USER, "password": "wrong"})
    assert client.post("/_test/reset-counters").status_code == 200
    assert set(counters(client).values()) == {0}


@pytest.fixture
def live_server(orthanc: StubOrthanc) -> Iterator[str]:
    """The app under a real uvicorn in a thread, as the subprocess runs it."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config_for(orthanc.base)),
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10, "token server", alive=thread.is_alive)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_pacs_streams_before_upstream_finishes(live_server: str, orthanc: StubOrthanc) -> None:
    with requests.Session() as session:
        session.post(
            f"{live_server}/_test/users", json={"username": USER, "password": PASSWORD}, timeout=5
        ).raise_for_status()
        signed = session.post(
            f"{live_server}/sign-user", json={"username": USER, "password": PASSWORD}, timeout=5
        )
        exchanged = session.post(
            f"{live_server}/generate-access-token",
            headers={"Authorization": f"Bearer {signed.json()['token']}"},
            timeout=5,
        )
        access_token = bearer(exchanged.headers["Authorization"])

        orthanc.release.clear()  # the stub holds back part two until we have seen part one
        with session.get(
            f"{live_server}/pacs/{SERIES_PATH}",
            headers={"Authorization": f"Bearer {access_token}"},
            stream=True,
            timeout=(5, 5),
        ) as response:
            assert response.status_code == 200
            assert response.headers["Content-Type"] == MULTIPART_TYPE
            received = b""
            chunks = response.iter_content(chunk_size=None)
            while len(received) < len(PART_ONE):
                received += next(chunks)
            assert received == PART_ONE
            orthanc.release.set()
            received += b"".join(chunks)
    assert received == PART_ONE + PART_TWO + CLOSING
