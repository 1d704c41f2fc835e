"""TokenAuth's decisions, on fakeredis and a scripted token server (fast; the real flows are in
tests/integration/test_token_auth.py)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import fakeredis
import jwt
import pytest

from model_proxy.shared.auth.token_auth import TokenAuth, auth_fingerprint
from model_proxy.shared.auth.token_server import Exchanged, TokenRejected
from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config.schema import ServerConfig
from model_proxy.shared.errors import AuthTokenNeeded, PacsAuthFailed

SERVER_ID = "b1407f18-575d-487c-bc0c-640c6da651bc"


def make_jwt(lifetime: float, **claims: Any) -> str:
    now = time.time()
    payload = {"iat": int(now), "exp": now + lifetime, "iss": "zhiva.ai", **claims}
    return jwt.encode(payload, "test-key-not-a-secret-of-anyone-0123456789", algorithm="HS256")


class ScriptedTokenServer:
    """Plays the token server: counts calls, hands out JWTs, refuses on demand."""

    def __init__(self, access_lifetime: float = 3600) -> None:
        self.calls: Counter[str] = Counter()
        self.access_lifetime = access_lifetime
        self.refuse: set[str] = set()
        self.origins: list[str | None] = []
        self.delay = 0.0
        self._lock = threading.Lock()

    def _call(self, name: str) -> None:
        time.sleep(self.delay)
        with self._lock:
            self.calls[name] += 1
        if name in self.refuse:
            raise TokenRejected(name, 403)

    def sign_in(self, url: str, login: str, password: str) -> str:
        self._call("sign_in")
        return make_jwt(3600, username=login)

    def exchange(self, url: str, auth_token: str, origin: str | None) -> Exchanged:
        self._call("exchange")
        self.origins.append(origin)
        return Exchanged(make_jwt(self.access_lifetime), make_jwt(30 * 86400, kind="refresh"))

    def refresh(self, url: str, refresh_token: str, origin: str | None) -> str:
        self._call("refresh")
        self.origins.append(origin)
        return make_jwt(self.access_lifetime)


def zhiva_server(**overrides: Any) -> ServerConfig:
    fields = {
        "uri": "https://pacs.test/zhiva/pacs",
        "authType": "zhivaAuth",
        "login": "reader",
        "password": "pw-3141-not-real",
        "signInServer": "https://pacs.test/auth/sign-user",
        "signInTokenServer": "https://pacs.test/auth/generate-access-token",
        "refreshServer": "https://pacs.test/auth/refresh-token",
        **overrides,
    }
    return ServerConfig.model_validate(fields)


def token_server_config(auth_token: str) -> ServerConfig:
    return ServerConfig.model_validate(
        {
            "uri": "https://pacs.test/zhiva/pacs",
            "authType": "token",
            "authToken": auth_token,
            "signInTokenServer": "https://pacs.test/auth/generate-access-token",
            "refreshServer": "https://pacs.test/auth/refresh-token",
        }
    )


@pytest.fixture()
def store() -> TokenStore:
    return TokenStore(fakeredis.FakeRedis(), lock_timeout=5, wait_timeout=10)


def auth_for(
    server: ServerConfig, store: TokenStore, tokens: ScriptedTokenServer, margin: float = 60
) -> TokenAuth:
    return TokenAuth(SERVER_ID, server, store, tokens, margin)  # type: ignore[arg-type]


def test_first_use_signs_in_and_exchanges_then_reuses(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    auth = auth_for(zhiva_server(), store, tokens)

    first = auth.headers()
    second = auth_for(zhiva_server(), store, tokens).headers()  # another process, same Redis

    assert first == second
    assert first["Authorization"].startswith("Bearer ")
    assert "Origin" not in first
    assert tokens.calls == {"sign_in": 1, "exchange": 1}


def test_an_access_token_within_the_margin_is_refreshed_ahead(store: TokenStore) -> None:
    tokens = ScriptedTokenServer(access_lifetime=30)
    auth = auth_for(zhiva_server(), store, tokens, margin=60)

    before = auth.headers()
    after = auth.headers()

    assert before != after
    assert tokens.calls == {"sign_in": 1, "exchange": 1, "refresh": 1}


def test_a_refused_token_is_refreshed_once(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    auth = auth_for(zhiva_server(), store, tokens)
    rejected = auth.headers()

    assert auth.renew(rejected) is True
    assert auth.headers() != rejected
    assert tokens.calls["refresh"] == 1
    # a second process refused with the same old token finds the renewed one: no new refresh
    assert auth_for(zhiva_server(), store, tokens).renew(rejected) is True
    assert tokens.calls["refresh"] == 1


def test_a_refused_refresh_signs_in_again_with_zhiva_auth(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    auth = auth_for(zhiva_server(), store, tokens)
    rejected = auth.headers()
    tokens.refuse.add("refresh")

    assert auth.renew(rejected) is True
    assert tokens.calls == {"sign_in": 2, "exchange": 2, "refresh": 1}


def test_a_refused_refresh_with_an_external_token_asks_for_a_new_auth_token(
    store: TokenStore,
) -> None:
    tokens = ScriptedTokenServer()
    auth = auth_for(token_server_config(make_jwt(3600)), store, tokens)
    rejected = auth.headers()
    tokens.refuse.add("refresh")

    with pytest.raises(AuthTokenNeeded) as caught:
        auth.renew(rejected)
    assert "new authToken" in caught.value.message
    assert SERVER_ID in caught.value.message
    assert tokens.calls["exchange"] == 1  # the one-off auth token is never sent twice


def test_a_used_up_external_token_is_a_clear_error(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    tokens.refuse.add("exchange")
    auth = auth_for(token_server_config(make_jwt(3600)), store, tokens)

    with pytest.raises(AuthTokenNeeded):
        auth.headers()


def test_a_wrong_password_is_a_502_error_without_the_password(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    tokens.refuse.add("sign_in")
    server = zhiva_server(password="pw-wrong-2718")

    with pytest.raises(PacsAuthFailed) as caught:
        auth_for(server, store, tokens).headers()
    assert SERVER_ID in caught.value.message
    assert "pw-wrong-2718" not in caught.value.message


def test_a_changed_login_starts_over(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    auth_for(zhiva_server(), store, tokens).headers()
    auth_for(zhiva_server(login="someone-else"), store, tokens).headers()

    assert tokens.calls == {"sign_in": 2, "exchange": 2}


def test_an_auth_token_with_aud_sends_that_origin(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    auth = auth_for(token_server_config(make_jwt(3600, aud="https://viewer.test")), store, tokens)

    headers = auth.headers()
    auth.renew(headers)

    assert headers["Origin"] == "https://viewer.test"
    assert tokens.origins == ["https://viewer.test", "https://viewer.test"]


def test_concurrent_first_use_signs_in_once(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    tokens.delay = 0.05
    results: list[dict[str, str]] = []

    def use() -> None:
        results.append(auth_for(zhiva_server(), store, tokens).headers())

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 8
    assert len({r["Authorization"] for r in results}) == 1
    assert tokens.calls == {"sign_in": 1, "exchange": 1}


def test_token_values_stay_out_of_repr(store: TokenStore) -> None:
    tokens = ScriptedTokenServer()
    auth = auth_for(zhiva_server(), store, tokens)
    auth.headers()
    stored = store.load(SERVER_ID, auth_fingerprint(zhiva_server()))
    assert stored is not None
    assert stored.access_token not in repr(stored)
    assert "pw-3141-not-real" not in repr(zhiva_server())
