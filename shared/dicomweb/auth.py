"""How a DICOMweb request to one PACS is authenticated."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Protocol

import requests

from model_proxy.shared.auth.token_auth import TokenAuth
from model_proxy.shared.auth.token_server import TokenServerClient
from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config.schema import AuthType, ServerConfig
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.http import Timeouts

__all__ = ["BasicAuth", "NoAuth", "PacsAuth", "auth_for_server"]


class PacsAuth(Protocol):
    def headers(self) -> dict[str, str]:
        """The headers to add to every request to this PACS."""
        ...

    def renew(self, rejected: Mapping[str, str]) -> bool:
        """The PACS refused a request sent with ``rejected``: True if a retry may succeed."""
        ...


class NoAuth:
    def headers(self) -> dict[str, str]:
        return {}

    def renew(self, rejected: Mapping[str, str]) -> bool:
        return False


class BasicAuth:
    """``Authorization: Basic base64(login:password)``, UTF-8 (model-contract §4)."""

    def __init__(self, login: str, password: str) -> None:
        credentials = f"{login}:{password}".encode()
        self._header = "Basic " + base64.b64encode(credentials).decode("ascii")

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def renew(self, rejected: Mapping[str, str]) -> bool:
        return False  # the same credentials would be refused again

    def __repr__(self) -> str:
        return "BasicAuth(***)"


def auth_for_server(
    server_id: str,
    server: ServerConfig,
    *,
    session: requests.Session,
    token_store: TokenStore | None,
    timeouts: Timeouts,
    refresh_margin: float,
    on_token_call: Callable[[str, str], None] | None = None,
) -> PacsAuth:
    if server.auth_type is AuthType.NONE:
        return NoAuth()
    if server.auth_type is AuthType.BASIC:
        assert server.login is not None and server.password is not None
        return BasicAuth(server.login, server.password.get_secret_value())
    if token_store is None:
        raise ConfigError(
            f"server {server_id} signs in at a token server, whose tokens every process "
            "shares through Redis: set MODEL_PROXY_REDIS_URL"
        )
    return TokenAuth(
        server_id,
        server,
        token_store,
        TokenServerClient(server_id, session, timeouts),
        refresh_margin,
        on_token_call,
    )
