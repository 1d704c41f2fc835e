"""The three calls to a token server (model-contract §4.1): sign in, exchange, refresh."""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass

import orjson
import requests

from model_proxy.shared.errors import PacsFailed, PacsTimeout, PacsUnreachable
from model_proxy.shared.http import Peer, Timeouts, tls_advice, translated_errors

__all__ = ["Exchanged", "TokenRejected", "TokenServerClient"]

_BEARER = re.compile(r"^\s*bearer\s+", re.IGNORECASE)


class TokenRejected(Exception):
    """The token server refused a credential (any non-2xx answer); carries the status only."""

    def __init__(self, endpoint: str, status: int) -> None:
        super().__init__(f"{endpoint} answered HTTP {status}")
        self.endpoint = endpoint
        self.status = status


@dataclass(frozen=True)
class Exchanged:
    access_token: str
    refresh_token: str | None


class TokenServerClient:
    """Talks to one server's token endpoints over that server's session (and TLS settings)."""

    def __init__(self, server_id: str, session: requests.Session, timeouts: Timeouts) -> None:
        self._server_id = server_id
        self._session = session
        self._timeouts = timeouts

    def sign_in(self, url: str, login: str, password: str) -> str:
        """``POST signInServer {"username", "password"}`` → the auth token."""
        response = self._post(url, "signInServer", json={"username": login, "password": password})
        try:
            token = orjson.loads(response.content).get("token")
        except (orjson.JSONDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PacsFailed(f"server {self._server_id}: signInServer answered without a token")
        return token

    def exchange(self, url: str, auth_token: str, origin: str | None) -> Exchanged:
        """``POST signInTokenServer`` with the auth token → access token and refresh token."""
        response = self._post(url, "signInTokenServer", headers=_bearer(auth_token, origin))
        return Exchanged(
            self._access_token(response, "signInTokenServer"), _refresh_token(response)
        )

    def refresh(self, url: str, refresh_token: str, origin: str | None) -> str:
        """``POST refreshServer`` with the refresh token → a new access token."""
        response = self._post(url, "refreshServer", headers=_bearer(refresh_token, origin))
        return self._access_token(response, "refreshServer")

    def _access_token(self, response: requests.Response, endpoint: str) -> str:
        # The real server sets Authorization; the documentation says Authentication.
        value = response.headers.get("Authorization") or response.headers.get("Authentication")
        token = _BEARER.sub("", value or "").strip()
        if not token:
            raise PacsFailed(
                f"server {self._server_id}: {endpoint} answered without an access token "
                "in its Authorization header"
            )
        return token

    def _post(self, url: str, endpoint: str, **kwargs: object) -> requests.Response:
        with self._errors(endpoint):
            response = self._session.post(url, timeout=self._timeouts.as_requests(), **kwargs)  # type: ignore[arg-type]
        if not 200 <= response.status_code < 300:
            raise TokenRejected(endpoint, response.status_code)
        return response

    def _errors(self, endpoint: str) -> AbstractContextManager[None]:
        peer = Peer(
            f"server {self._server_id}: {endpoint}",
            timeout=PacsTimeout,
            unreachable=PacsUnreachable,
            failed=PacsUnreachable,
            tls=tls_advice(self._server_id, endpoint),
        )
        return translated_errors(peer)


def _bearer(token: str, origin: str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if origin:
        headers["Origin"] = origin
    return headers


def _refresh_token(response: requests.Response) -> str | None:
    """The body text; a JSON body with ``refreshToken`` or ``token`` is accepted too."""
    text = response.text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        for key in ("refreshToken", "refresh_token", "token"):
            value = document.get(key) if isinstance(document, dict) else None
            if isinstance(value, str) and value:
                return value
        return None
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1]
    return text or None
