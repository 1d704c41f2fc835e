"""Who may ask (broker/access.py): anonymous access as the operator decides it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient

from model_proxy.broker.access import ANONYMOUS, Principal
from model_proxy.broker.app import create_app
from model_proxy.broker.requesters import CallerParam, admin_when_closed
from model_proxy.shared.api_keys import ApiKey, ApiKeyFile
from model_proxy.shared.settings import Settings
from tests.unit.test_api_keys import alice_and_bob
from tests.unit.test_origins import MODELS, SERVERS

JOB = "/jobs/0123456789abcdef0123456789abcdef"


def _api(folder: Path, anonymous: str | None, **values: Any) -> TestClient:
    """The API with the key file ``folder/api-keys.json`` (and any other ``values``)."""
    (folder / "servers.json").write_text(SERVERS)
    (folder / "models.json").write_text(MODELS)
    settings = Settings(
        servers_file=folder / "servers.json",
        models_file=folder / "models.json",
        anonymous=anonymous,
        api_keys_file=folder / "api-keys.json",
        **values,
    )
    app = create_app(settings, redis_url="redis://127.0.0.1:1/0")
    return TestClient(app, raise_server_exceptions=False)  # no lifespan: no Redis is needed


def test_with_anonymous_access_refused_a_request_without_credentials_is_401(
    tmp_path: Path,
) -> None:
    api = _api(tmp_path, "none")
    for method, path in [
        ("GET", JOB),
        ("DELETE", JOB),
        ("GET", "/jobs"),
        ("GET", "/segmentations/5f0e0f0e-0000-4000-8000-000000000002/studies/1.2"),
        ("GET", "/status"),
        ("GET", "/metrics"),
    ]:
        answer = api.request(method, path)
        assert answer.status_code == 401, (method, path)
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["code"] == "unauthenticated"


def test_a_credential_that_is_not_recognised_is_401_and_not_echoed(tmp_path: Path) -> None:
    api = _api(tmp_path, "none")
    for headers in ({"Authorization": "Bearer not-a-key-4711"}, {"X-API-Key": "not-a-key-4711"}):
        answer = api.get(JOB, headers=headers)
        assert answer.status_code == 401
        assert answer.json()["code"] == "invalid_credentials"
        assert "not-a-key-4711" not in answer.text


def test_probes_and_the_api_description_stay_open(tmp_path: Path) -> None:
    api = _api(tmp_path, "none")
    assert api.get("/healthz").status_code == 200
    assert api.get("/openapi.json").status_code == 200


def test_the_viewers_way_lets_requests_without_credentials_in(tmp_path: Path) -> None:
    for anonymous in ("viewer", None):
        answer = _api(tmp_path, anonymous).get("/healthz")
        assert answer.status_code == 200
        # past the access check (what comes after it needs the services of a started app)
        assert _api(tmp_path, anonymous).get(JOB).status_code != 401


def test_a_valid_key_is_let_in_with_either_header(tmp_path: Path) -> None:
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("alice")
    api = _api(tmp_path, "none")
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        # past the access check (what comes after it needs the services of a started app)
        assert api.get(JOB, headers=headers).status_code != 401


def test_a_wrong_key_is_401_whatever_the_anonymous_setting(tmp_path: Path) -> None:
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("alice")
    for anonymous in ("viewer", None, "none"):
        api = _api(tmp_path, anonymous)
        for headers in (
            {"Authorization": f"Bearer {key}x"},
            {"Authorization": "Bearer"},
            {"X-API-Key": ""},
            {"Authorization": "Basic d2FyZDpwYXNz", "X-API-Key": f"{key}x"},
        ):
            answer = api.get(JOB, headers=headers)
            assert answer.status_code == 401, (anonymous, headers)
            assert answer.json()["code"] == "invalid_credentials"
            assert key not in answer.text


def test_routes_see_the_principal_and_never_the_key(tmp_path: Path) -> None:
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("ops", "admin")
    api = _api(tmp_path, "viewer")

    async def whoami(request: Request) -> dict[str, object]:
        principal = request.state.principal
        return {"name": principal.name, "role": principal.role, "anonymous": principal.anonymous}

    api.app.add_api_route("/_whoami", whoami)  # type: ignore[attr-defined]
    assert api.get("/_whoami", headers={"X-API-Key": key}).json() == {
        "name": "ops",
        "role": "admin",
        "anonymous": False,
    }
    assert api.get("/_whoami").json() == {"name": "anonymous", "role": "viewer", "anonymous": True}


def test_the_kind_of_a_principal_is_what_it_showed() -> None:
    assert ANONYMOUS.kind == "anonymous"
    assert Principal("ward-7", "viewer").kind == "key"
    assert Principal("oidc:5f1c-9a", "admin").kind == "token"


def test_another_authorization_scheme_is_not_a_credential_of_ours(tmp_path: Path) -> None:
    """A reverse proxy with its own Basic login passes its header on: its users are anonymous
    viewers where that is allowed, asked for a credential where not, and a key still counts."""
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("alice")
    basic = {"Authorization": "Basic d2FyZDpwYXNz"}
    assert _api(tmp_path, "viewer").get(JOB, headers=basic).status_code != 401
    refused = _api(tmp_path, "none").get(JOB, headers=basic)
    assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
    with_key = _api(tmp_path, "none").get(JOB, headers={**basic, "X-API-Key": key})
    assert with_key.status_code != 401


def _flood_api(folder: Path) -> FastAPI:
    """The API with one check at a time, two waiting, five failures a minute, and a route
    behind the ordinary dependencies (the caller, the services) that names its caller."""
    api = _api(
        folder,
        "viewer",
        api_key_concurrent_checks=1,
        api_key_waiting_checks=2,
        api_key_max_failures=5,
    )
    app: FastAPI = api.app  # type: ignore[assignment]

    async def whoami(who: CallerParam) -> dict[str, str]:
        return {"name": who.requester}

    app.add_api_route("/_whoami", whoami, dependencies=[Depends(admin_when_closed)])
    app.state.services = SimpleNamespace(settings=SimpleNamespace(anonymous="viewer"))
    return app


def test_a_flood_of_wrong_secrets_for_a_known_id_does_not_hold_up_anyone_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys, alice, bob = alice_and_bob(tmp_path)
    bob_id = bob.split("_")[1]
    app = _flood_api(tmp_path)
    checked: list[str] = []
    release = threading.Event()
    original = ApiKey.matches

    def slow_check(self: ApiKey, secret: str) -> bool:
        checked.append(self.name)
        release.wait(10)  # scrypt under load: the flood's checks hold their thread
        return original(self, secret)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

            async def get(headers: dict[str, str]) -> httpx.Response:
                return await client.get("/_whoami", headers=headers)

            assert (await get({"X-API-Key": alice})).json() == {"name": "alice"}  # verified
            monkeypatch.setattr(ApiKey, "matches", slow_check)
            # the threadpool has one thread: the flood's check takes it
            anyio.to_thread.current_default_thread_limiter().total_tokens = 1
            flood = [
                asyncio.create_task(get({"X-API-Key": f"mpk_{bob_id}_wrong{n}"})) for n in range(30)
            ]
            for _ in range(500):  # all but the one checked and the two waiting are answered
                if sum(task.done() for task in flood) == 27 and checked:
                    break
                await asyncio.sleep(0.01)
            busy = [task.result() for task in flood if task.done()]
            assert len(busy) == 27 and checked == ["bob"]
            assert {(r.status_code, r.json()["code"], r.headers["retry-after"]) for r in busy} == {
                (503, "busy", "1")
            }
            # meanwhile a verified key and an anonymous caller pass at once, without a thread
            during = await asyncio.wait_for(
                asyncio.gather(get({"X-API-Key": alice}), get({})), timeout=5
            )
            assert [r.json() for r in during] == [{"name": "alice"}, {"name": "anonymous@10.0.0.7"}]
            release.set()
            codes = [r.json()["code"] for r in await asyncio.gather(*flood)]
            assert codes.count("busy") == 27 and codes.count("invalid_credentials") == 3
            # two more wrong secrets make five: then bob's id is refused without a check
            answers = [await get({"X-API-Key": f"mpk_{bob_id}_more{n}"}) for n in range(10)]
            codes = [answer.json()["code"] for answer in answers]
            assert codes == ["invalid_credentials"] * 2 + ["too_many_failures"] * 8
            assert all(int(a.headers["retry-after"]) > 0 for a in answers[2:])
            assert len(checked) == 5
            assert (await get({"X-API-Key": alice})).json() == {"name": "alice"}
            # revocation still works: the verified key is forgotten when it is revoked
            keys.revoke("alice")
            time.sleep(1.1)  # the reader looks at the file at most once a second
            refused = await get({"X-API-Key": alice})
            assert (refused.status_code, refused.json()["code"]) == (401, "invalid_credentials")
            assert len(checked) == 5

    asyncio.run(scenario())
