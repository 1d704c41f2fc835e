"""OIDC bearer tokens on a real ``model-proxy serve`` process: a loopback identity provider with
real keys, anonymous requests refused; valid tokens reach the routes, bad ones are 401, and the
API's log never shows a token."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests

from devtools.processes import free_port
from tests.integration.test_access import _serve_environment
from tests.support.identity_provider import AUDIENCE, IdentityProvider, identity_provider

pytestmark = pytest.mark.integration


@pytest.fixture()
def provider() -> Iterator[IdentityProvider]:
    with identity_provider("RSA", "EC") as started:
        yield started


def _start(tmp_path: Path, *args: str, **environ: str) -> tuple[subprocess.Popen[str], str]:
    """``serve`` with the settings given and the log (DEBUG) in ``tmp_path/serve.log``."""
    port = free_port()
    env = _serve_environment(tmp_path, MODEL_PROXY_LOG_LEVEL="DEBUG", **environ)
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(port), *args]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            requests.get(f"{url}/healthz", timeout=2)
            return process, url
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_tokens_on_a_served_api_that_refuses_anonymous_requests(
    tmp_path: Path, provider: IdentityProvider
) -> None:
    process, url = _start(
        tmp_path,
        MODEL_PROXY_ANONYMOUS="none",
        MODEL_PROXY_JWT_ISSUER=provider.issuer,
        MODEL_PROXY_JWT_AUDIENCE=AUDIENCE,
    )
    now = int(time.time())
    good = {
        "viewer": provider.token(),
        "admin (EC key, scp list)": provider.token("ec-2", scope=None, scp=["admin:model"]),
    }
    bad = {
        "expired": provider.token(exp=now - 600),
        "wrong audience": provider.token(aud="another-service"),
        "wrong issuer": provider.token(iss="https://idp.example/realms/other"),
        "unsigned": jwt.encode(
            jwt.decode(provider.token(), options={"verify_signature": False}),
            None,
            algorithm="none",
            headers={"kid": "rsa-1"},
        ),
        "hs256 with the public key": provider.forged_hs256("rsa-1"),
    }
    try:
        assert requests.get(f"{url}/jobs", timeout=10).status_code == 401
        for name, token in good.items():
            answer = requests.get(
                f"{url}/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert answer.status_code == 200, (name, answer.text)
        for name, token in bad.items():
            answer = requests.get(
                f"{url}/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10
            )
            assert answer.status_code == 401, name
            assert answer.json()["code"] == "invalid_credentials", name
            assert token not in answer.text
        no_scope = provider.token(scope="openid profile")
        answer = requests.get(
            f"{url}/jobs", headers={"Authorization": f"Bearer {no_scope}"}, timeout=10
        )
        assert answer.status_code == 403 and answer.json()["code"] == "insufficient_scope"
    finally:
        _stop(process)
    log = (tmp_path / "serve.log").read_text()
    assert "signing keys" in log  # the log was written, at DEBUG
    for token in [*good.values(), *bad.values(), no_scope]:
        for piece in token.split("."):
            assert len(piece) < 16 or piece not in log


def test_serve_beyond_loopback_with_an_issuer_refuses_anonymous_requests(
    tmp_path: Path, provider: IdentityProvider
) -> None:
    process, url = _start(
        tmp_path,
        "--host",
        "0.0.0.0",
        MODEL_PROXY_JWT_ISSUER=provider.issuer,
        MODEL_PROXY_JWT_AUDIENCE=AUDIENCE,
    )
    try:
        answer = requests.get(f"{url}/jobs", timeout=10)
        assert answer.status_code == 401 and answer.json()["code"] == "unauthenticated"
        token = provider.token()
        assert (
            requests.get(
                f"{url}/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10
            ).status_code
            == 200
        )
    finally:
        _stop(process)


def test_serve_with_half_an_oidc_configuration_stops_naming_the_setting(tmp_path: Path) -> None:
    env = _serve_environment(tmp_path, MODEL_PROXY_JWT_ISSUER="https://idp.example/realms/h")
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(free_port())]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "MODEL_PROXY_JWT_AUDIENCE" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was started
