"""``token`` and ``zhivaAuth``: bearer access tokens, refreshed ahead of expiry, shared by all.

The flow (model-contract §4.1):

1. ``zhivaAuth`` with ``login``/``password`` signs in at ``signInServer`` for an auth token;
   ``token`` (or ``zhivaAuth`` without a login) uses the configured one-off ``authToken``.
2. The auth token is exchanged once at ``signInTokenServer`` for an access and a refresh token.
3. Every DICOMweb call carries ``Authorization: Bearer <access token>``.
4. Ahead of the access token's ``exp`` (by the configured margin), or once after the PACS
   refused it, ``refreshServer`` gives a new access token; the refresh token is kept.
5. When the refresh fails, ``zhivaAuth`` signs in again; ``token`` cannot (its auth token was
   used up) and says that servers.json needs a new ``authToken``.

Tokens live in the :class:`TokenStore`; only the holder of the server's lock talks to the token
server, and everyone else then reads what it stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping

from model_proxy.shared.auth.token_server import TokenRejected, TokenServerClient
from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.auth.tokens import TokenSet, audience
from model_proxy.shared.config.schema import AuthType, ServerConfig
from model_proxy.shared.errors import AuthTokenNeeded, PacsAuthFailed

__all__ = ["TokenAuth", "auth_fingerprint"]

log = logging.getLogger(__name__)


def auth_fingerprint(server: ServerConfig) -> str:
    """A digest of everything that decides which tokens a server's settings obtain."""
    material = {
        "authType": server.auth_type.value,
        "login": server.login,
        "password": server.password.get_secret_value() if server.password else None,
        "authToken": server.auth_token.get_secret_value() if server.auth_token else None,
        "signInServer": server.sign_in_server,
        "signInTokenServer": server.sign_in_token_server,
        "refreshServer": server.refresh_server,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class TokenAuth:
    """A :class:`~shared.dicomweb.auth.PacsAuth` for servers behind a token server."""

    def __init__(
        self,
        server_id: str,
        server: ServerConfig,
        store: TokenStore,
        client: TokenServerClient,
        refresh_margin: float,
        on_call: Callable[[str, str], None] | None = None,
    ) -> None:
        """``on_call(kind, outcome)`` hears of every call to the token server (for metrics):
        kind ``sign_in``, ``exchange`` or ``refresh``; outcome ``ok`` or ``refused``."""
        assert server.auth_type in (AuthType.TOKEN, AuthType.ZHIVA)
        self._server_id = server_id
        self._server = server
        self._store = store
        self._client = client
        self._margin = refresh_margin
        self._fingerprint = auth_fingerprint(server)
        self._on_call = on_call or _ignore

    def __repr__(self) -> str:
        return f"TokenAuth(server={self._server_id})"

    def headers(self) -> dict[str, str]:
        return _headers(self._current())

    def renew(self, rejected: Mapping[str, str]) -> bool:
        """The PACS refused ``rejected``: refresh once (unless another process already did)."""
        rejected_value = rejected.get("Authorization", "")
        with self._store.locked(self._server_id) as acquired:
            stored = self._store.load(self._server_id, self._fingerprint)
            if stored is not None and _headers(stored).get("Authorization") != rejected_value:
                return True  # someone renewed it while we were refused
            if not acquired:
                return False
            log.info("server %s: the PACS refused the access token; refreshing", self._server_id)
            self._store.save(self._server_id, self._obtain(stored))
            return True

    def _current(self) -> TokenSet:
        stored = self._store.load(self._server_id, self._fingerprint)
        if stored is not None and stored.access_usable(self._margin):
            return stored
        with self._store.locked(self._server_id) as acquired:
            stored = self._store.load(self._server_id, self._fingerprint)
            if stored is not None and stored.access_usable(self._margin):
                return stored  # renewed by the lock holder we waited for
            if not acquired:
                if stored is not None and stored.access_usable(0):
                    return stored
                raise PacsAuthFailed(
                    f"server {self._server_id}: timed out waiting for another process to "
                    "sign in at its token server"
                )
            tokens = self._obtain(stored)
            self._store.save(self._server_id, tokens)
            return tokens

    def _obtain(self, stored: TokenSet | None) -> TokenSet:
        """New tokens: a refresh when possible, else a fresh sign-in. Holds the lock."""
        server = self._server
        if stored is not None and server.refresh_server and stored.refresh_usable():
            assert stored.refresh_token is not None
            try:
                access = self._client.refresh(
                    server.refresh_server, stored.refresh_token, stored.origin
                )
                self._on_call("refresh", "ok")
                log.info("server %s: access token refreshed", self._server_id)
                return TokenSet(self._fingerprint, access, stored.refresh_token, stored.origin)
            except TokenRejected as rejected:
                self._on_call("refresh", "refused")
                log.warning(
                    "server %s: refresh refused (HTTP %d)", self._server_id, rejected.status
                )
        return self._sign_in(already_exchanged=stored is not None)

    def _sign_in(self, already_exchanged: bool) -> TokenSet:
        server = self._server
        assert server.sign_in_token_server is not None
        can_sign_in = (
            server.auth_type is AuthType.ZHIVA
            and server.login is not None
            and server.password is not None
            and server.sign_in_server is not None
        )
        if can_sign_in:
            assert server.login and server.password and server.sign_in_server
            try:
                auth_token = self._client.sign_in(
                    server.sign_in_server, server.login, server.password.get_secret_value()
                )
                self._on_call("sign_in", "ok")
            except TokenRejected as rejected:
                self._on_call("sign_in", "refused")
                raise PacsAuthFailed(
                    f"server {self._server_id}: its signInServer refused the login "
                    f"(HTTP {rejected.status}); check login and password in servers.json"
                ) from None
            log.info("server %s: signed in", self._server_id)
        else:
            assert server.auth_token is not None
            if already_exchanged:
                raise self._needs_new_auth_token()
            auth_token = server.auth_token.get_secret_value()
        origin = audience(auth_token)
        try:
            exchanged = self._client.exchange(server.sign_in_token_server, auth_token, origin)
            self._on_call("exchange", "ok")
        except TokenRejected as rejected:
            self._on_call("exchange", "refused")
            if not can_sign_in:
                raise self._needs_new_auth_token(rejected.status) from None
            raise PacsAuthFailed(
                f"server {self._server_id}: its signInTokenServer refused the auth token "
                f"(HTTP {rejected.status})"
            ) from None
        log.info("server %s: auth token exchanged for access and refresh tokens", self._server_id)
        return TokenSet(self._fingerprint, exchanged.access_token, exchanged.refresh_token, origin)

    def _needs_new_auth_token(self, status: int | None = None) -> AuthTokenNeeded:
        answered = f" (signInTokenServer answered HTTP {status})" if status else ""
        return AuthTokenNeeded(
            f"server {self._server_id}: its tokens can no longer be refreshed and its one-off "
            f"authToken is used up{answered}; put a new authToken for this server in "
            "servers.json"
        )


def _ignore(kind: str, outcome: str) -> None:
    return None


def _headers(tokens: TokenSet) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    if tokens.origin:
        headers["Origin"] = tokens.origin
    return headers
