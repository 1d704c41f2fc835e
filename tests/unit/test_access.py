"""Who may ask (broker/access.py): anonymous access as the operator decides it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.testclient import TestClient

from model_proxy.broker.access import ANONYMOUS, Principal
from model_proxy.broker.app import create_app
from model_proxy.shared.api_keys import ApiKeyFile
from model_proxy.shared.settings import Settings
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
