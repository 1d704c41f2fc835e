"""PACS servers behind a token server: ``token`` and ``zhivaAuth`` end to end.

A test token server following the zhiva contract (RS256 JWTs, one-off auth tokens, refresh
tokens that are not rotated, lifetimes in seconds, call counters) stands in front of the real
Orthanc as a reverse proxy that refuses unknown or expired access tokens with 403. The API and
two workers run as real processes on a Redis with persistence, so they can all be restarted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests

from devtools.processes import (
    ManagedProcess,
    free_port,
    wait_until,
    wait_until_worker_ready,
)
from devtools.redis_server import RedisServer
from model_proxy.shared.api_keys import ApiKeyFile
from tests.support.deployment import PacsData, start_token_server

pytestmark = pytest.mark.integration

ZHIVA = "5a0c3f1e-1111-4a6b-9c1d-000000000001"
ZHIVA_WRONG_PASSWORD = "5a0c3f1e-1111-4a6b-9c1d-000000000002"
TOKEN = "5a0c3f1e-1111-4a6b-9c1d-000000000003"
TOKEN_EXPIRING = "5a0c3f1e-1111-4a6b-9c1d-000000000004"
TOKEN_WITH_AUD = "5a0c3f1e-1111-4a6b-9c1d-000000000005"

USER = "proxy-reader"
PASSWORD = "zh1va-Test-Pass-4471"
WRONG_PASSWORD = "zh1va-Wrong-Pass-5582"
VIEWER_ORIGIN = "https://viewer.example.test"
MODELS = [f"6b1d4a2f-2222-4b7c-8d2e-{index:012d}" for index in range(8)]
PACS_CALLS_PER_JOB = 2  # the instance count (QIDO-RS), then the retrieve (WADO-RS)
DEFAULT_TTLS = {"access_ttl": 3600.0, "refresh_ttl": 86400.0, "auth_ttl": 3600.0}


@dataclass
class TokenServer:
    url: str
    process: ManagedProcess

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.url}{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.call("GET", "/_test/counters")
        return counters

    def reset(self) -> None:
        self.call("POST", "/_test/reset-counters")

    def configure(self, **options: Any) -> None:
        self.call("POST", "/_test/config", json=options)

    def auth_token(self, username: str, aud: str | None = None) -> str:
        """A one-off auth token for a user of its own (a user has one current auth token)."""
        self.call("POST", "/_test/users", json={"username": username, "password": PASSWORD})
        body: dict[str, Any] = {"username": username}
        if aud:
            body["aud"] = aud
        token: str = self.call("POST", "/_test/auth-token", json=body)["token"]
        return token


class Stack:
    """The API and two workers as processes, on a Redis that persists; all restartable."""

    def __init__(self, workdir: Path, environ: dict[str, str], redis_server: RedisServer) -> None:
        self.workdir = workdir
        self.environ = environ
        self.redis = redis_server
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[ManagedProcess] = []
        self.generation = 0
        self.admin: dict[str, str] = {}  # the header of an admin key, who lists every job

    def start(self) -> None:
        self.generation += 1
        env = {**self.environ, "PYTHONUNBUFFERED": "1"}
        for index in (1, 2):
            worker = ManagedProcess(
                f"token-worker-{index}",
                [sys.executable, "-m", "model_proxy", "worker", "--concurrency", "4"],
                self.workdir / f"token-worker-{index}.{self.generation}.log",
                env=env,
            )
            self.processes.append(worker)
        api = ManagedProcess(
            "token-api",
            [sys.executable, "-m", "model_proxy", "serve", "--port", str(self.port)],
            self.workdir / f"token-api.{self.generation}.log",
            env=env,
        )
        self.processes.append(api)
        for worker in self.processes[:-1]:
            wait_until_worker_ready(worker)
        wait_until(
            lambda: requests.get(f"{self.url}/healthz", timeout=1).ok,
            60,
            "api",
            alive=lambda: api.alive,
        )

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()

    def get(self, path: str, **params: str) -> requests.Response:
        """A fresh run each time (no cached answer), so that each reaches the PACS."""
        return requests.get(
            f"{self.url}{path}", params=params, headers={"Cache-Control": "no-cache"}, timeout=90
        )

    def forget_tokens(self, server: str) -> None:
        """Empty the token store of one server (a token server's one-off token cannot be)."""
        client = redis.Redis.from_url(self.redis.url)
        client.delete(f"model-proxy:tokens:{server}")
        client.close()


@pytest.fixture(scope="module")
def token_server(workdir: Path, pacs: PacsData) -> Iterator[TokenServer]:
    url, process = start_token_server(pacs, workdir / "token-server.log")
    server = TokenServer(url, process)
    server.call("POST", "/_test/users", json={"username": USER, "password": PASSWORD})
    yield server
    process.stop()


@pytest.fixture(scope="module")
def stack(
    workdir: Path,
    pacs: PacsData,
    example_model: str,
    token_server: TokenServer,
) -> Iterator[Stack]:
    here = workdir / "token-auth"
    here.mkdir()
    auth = token_server.url
    zhiva = {
        "authType": "zhivaAuth",
        "signInServer": f"{auth}/sign-user",
        "signInTokenServer": f"{auth}/generate-access-token",
        "refreshServer": f"{auth}/refresh-token",
    }
    external = {
        "authType": "token",
        "signInTokenServer": f"{auth}/generate-access-token",
        "refreshServer": f"{auth}/refresh-token",
    }
    pacs_uri = f"{auth}/pacs"
    servers = {
        ZHIVA: {
            "uri": pacs_uri,
            "isDefault": True,
            **zhiva,
            "login": USER,
            "password": "${MP_TEST_ZHIVA_PASSWORD}",
        },
        ZHIVA_WRONG_PASSWORD: {"uri": pacs_uri, **zhiva, "login": USER, "password": WRONG_PASSWORD},
        TOKEN: {"uri": pacs_uri, **external, "authToken": "${MP_TEST_AUTH_TOKEN}"},
        TOKEN_EXPIRING: {
            "uri": pacs_uri,
            **external,
            "token": token_server.auth_token("token-user-expiring"),
        },
        TOKEN_WITH_AUD: {
            "uri": pacs_uri,
            **external,
            "authToken": token_server.auth_token("token-user-aud", VIEWER_ORIGIN),
        },
    }
    # several keys for one model, so that concurrent requests are distinct jobs
    models = {
        model: {
            "uri": f"{example_model}/segmentation",
            "task": "segmentation",
            "supports": ["/studies", "/studies/series"],
        }
        for model in MODELS
    }
    (here / "servers.json").write_text(json.dumps(servers, indent=2))
    (here / "models.json").write_text(json.dumps(models, indent=2))
    redis_server = RedisServer(here / "redis", appendonly=True)
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODEL_PROXY_")},
        "MP_TEST_ZHIVA_PASSWORD": PASSWORD,
        "MP_TEST_AUTH_TOKEN": token_server.auth_token("token-user"),
        "MODEL_PROXY_REDIS_URL": redis_server.url,
        "MODEL_PROXY_SERVERS_FILE": str(here / "servers.json"),
        "MODEL_PROXY_MODELS_FILE": str(here / "models.json"),
        "MODEL_PROXY_TOKEN_REFRESH_MARGIN": "1.5",
        "MODEL_PROXY_LOG_LEVEL": "DEBUG",
        "MODEL_PROXY_API_KEYS_FILE": str(here / "api-keys.json"),
    }
    _, admin_key = ApiKeyFile(here / "api-keys.json").add("ops", "admin")
    running = Stack(here, environ, redis_server)
    running.admin = {"Authorization": f"Bearer {admin_key}"}
    running.start()
    yield running
    running.stop()
    redis_server.stop()


@pytest.fixture()
def fresh(token_server: TokenServer, stack: Stack) -> Iterator[None]:
    """Default lifetimes, zeroed counters; lifetimes are restored after the test."""
    token_server.configure(**DEFAULT_TTLS, delay=0.0)
    token_server.reset()
    yield
    token_server.configure(**DEFAULT_TTLS, delay=0.0)


def series_path(pacs: PacsData, model: str = MODELS[0]) -> str:
    item = pacs.series_a[0]
    return f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}"


def assert_masks(response: requests.Response, pacs: PacsData) -> None:
    assert response.status_code == 200, response.text
    frames = response.json()[pacs.study_uid][pacs.series_a[0].series_uid]
    assert {k for k in frames if k != "metadata"} == {i.sop_uid for i in pacs.series_a}
    item = pacs.series_a[0]
    assert np.array(frames[item.sop_uid]["segments"][0]["points"]).shape == (
        item.rows,
        item.columns,
    )


def test_zhiva_auth_signs_in_once_and_retrieves_the_series(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    stack.forget_tokens(ZHIVA)

    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)
    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)

    counters = token_server.counters()
    assert (counters["sign_in"], counters["exchange"], counters["refresh"]) == (1, 1, 0)
    assert counters["pacs_ok"] == 2 * PACS_CALLS_PER_JOB
    assert counters["pacs_rejected"] == 0


def test_external_token_is_exchanged_once_and_retrieves_the_series(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    assert_masks(stack.get(series_path(pacs), server=TOKEN), pacs)
    assert_masks(stack.get(series_path(pacs), server=TOKEN), pacs)

    counters = token_server.counters()
    assert (counters["sign_in"], counters["exchange"]) == (0, 1)


def test_an_auth_token_with_aud_sends_origin_to_the_token_server_and_the_pacs(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    # the token server refuses the exchange, and the PACS the access token, without that Origin
    assert_masks(stack.get(series_path(pacs), server=TOKEN_WITH_AUD), pacs)
    assert token_server.counters()["pacs_rejected"] == 0


def test_an_access_token_about_to_expire_is_refreshed_ahead_of_time(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    stack.forget_tokens(ZHIVA)
    # 3.5 s before the margin: time for the first job's PACS calls, on a busy machine too
    token_server.configure(access_ttl=5.0)
    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)
    time.sleep(3.6)  # issued before that answer: now less than the 1.5 s margin is left

    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)

    counters = token_server.counters()
    assert (counters["sign_in"], counters["exchange"], counters["refresh"]) == (1, 1, 1)
    assert counters["pacs_rejected"] == 0


def test_a_token_the_pacs_refuses_is_refreshed_once_and_the_request_retried(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)
    token_server.call("POST", "/_test/revoke-access")
    token_server.reset()

    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)

    counters = token_server.counters()
    assert counters["pacs_rejected"] == 1
    assert counters["refresh"] == 1
    assert counters["sign_in"] == 0


def test_an_expired_refresh_token_makes_zhiva_auth_sign_in_again(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    stack.forget_tokens(ZHIVA)
    token_server.configure(access_ttl=1.0, refresh_ttl=2.0)
    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)
    time.sleep(2.5)
    token_server.reset()
    # the tokens kept have expired; the new ones must outlive this request (a 1-second access
    # token is inside the refresh margin from the start)
    token_server.configure(access_ttl=60.0, refresh_ttl=120.0)

    assert_masks(stack.get(series_path(pacs), server=ZHIVA), pacs)

    counters = token_server.counters()
    assert (counters["sign_in"], counters["exchange"]) == (1, 1)
    assert counters["pacs_rejected"] == 0


def test_an_expired_refresh_token_with_an_external_token_is_a_clear_error(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    # an access token inside the margin is refreshed before each PACS call: the refresh token
    # lasts the first job's calls, on a busy machine too
    token_server.configure(access_ttl=1.0, refresh_ttl=4.0)
    assert_masks(stack.get(series_path(pacs), server=TOKEN_EXPIRING), pacs)
    time.sleep(4.1)  # issued before that answer: now expired

    response = stack.get(series_path(pacs), server=TOKEN_EXPIRING)

    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "auth_token_needed"
    assert TOKEN_EXPIRING in body["message"]
    assert "new authToken" in body["message"]


def test_eight_concurrent_jobs_with_no_tokens_sign_in_and_exchange_once(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    stack.forget_tokens(ZHIVA)
    token_server.configure(delay=0.3)  # widen the window in which they would race

    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda model: stack.get(series_path(pacs, model), server=ZHIVA), MODELS)
        )

    for response in responses:
        assert_masks(response, pacs)
    counters = token_server.counters()
    assert (counters["sign_in"], counters["exchange"]) == (1, 1)
    assert counters["pacs_ok"] == 8 * PACS_CALLS_PER_JOB
    metrics = requests.get(f"{stack.url}/metrics", timeout=10).text
    assert f'kind="sign_in",outcome="ok",server="{ZHIVA}"' in metrics


def test_restarting_api_workers_and_redis_keeps_the_tokens(
    stack: Stack, token_server: TokenServer, pacs: PacsData, fresh: None
) -> None:
    for server in (ZHIVA, TOKEN):
        assert_masks(stack.get(series_path(pacs), server=server), pacs)
    token_server.reset()
    before = requests.get(f"{stack.url}/jobs", headers=stack.admin, timeout=10).json()["jobs"]

    stack.stop()
    stack.redis.restart()
    stack.start()

    for server in (ZHIVA, TOKEN):
        assert_masks(stack.get(series_path(pacs), server=server), pacs)
    counters = token_server.counters()
    assert (counters["sign_in"], counters["exchange"], counters["refresh"]) == (0, 0, 0)
    # the jobs, and the results of those that succeeded, outlived the restart of Redis too
    assert before
    for job in before:
        again = requests.get(f"{stack.url}/jobs/{job['id']}", timeout=10)
        assert again.status_code == 200
        assert again.json()["state"] == job["state"]
    succeeded = next(job for job in before if job["state"] == "succeeded")
    result = requests.get(f"{stack.url}{succeeded['links']['result']}", timeout=10)
    assert result.status_code == 200


def test_a_wrong_password_is_a_502_naming_the_server_without_secrets(
    stack: Stack, pacs: PacsData, fresh: None
) -> None:
    response = stack.get(series_path(pacs), server=ZHIVA_WRONG_PASSWORD)

    assert response.status_code == 502
    assert response.json()["code"] == "pacs_auth_failed"
    assert ZHIVA_WRONG_PASSWORD in response.json()["message"]
    assert WRONG_PASSWORD not in response.text
    assert USER not in response.text


def test_no_log_of_the_whole_run_contains_a_secret(
    stack: Stack, token_server: TokenServer, workdir: Path
) -> None:
    """Runs last in this module: every token ever issued and every password, in no log."""
    issued: list[str] = token_server.call("GET", "/_test/issued")["tokens"]
    secrets = [PASSWORD, WRONG_PASSWORD, *issued]
    assert len(issued) >= 6
    logs = [p for p in workdir.rglob("*.log") if p.name != "token-server.log"]
    assert any("token-worker" in p.name for p in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        leaked = [s[:12] + "..." for s in secrets if s in text]
        assert leaked == [], f"{path.name} contains secrets {leaked}"
