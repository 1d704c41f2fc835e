"""How a DICOMweb request to one PACS is authenticated."""

from __future__ import annotations

import base64
from typing import Protocol

from shared.config.schema import AuthType, ServerConfig
from shared.errors import UnsupportedAuth

__all__ = ["BasicAuth", "NoAuth", "PacsAuth", "auth_for_server"]


class PacsAuth(Protocol):
    def headers(self) -> dict[str, str]:
        """The headers to add to every request to this PACS."""
        ...


class NoAuth:
    def headers(self) -> dict[str, str]:
        return {}


class BasicAuth:
    """``Authorization: Basic base64(login:password)``, UTF-8 (contract G17)."""

    def __init__(self, login: str, password: str) -> None:
        credentials = f"{login}:{password}".encode()
        self._header = "Basic " + base64.b64encode(credentials).decode("ascii")

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._header}

    def __repr__(self) -> str:
        return "BasicAuth(***)"


def auth_for_server(server_id: str, server: ServerConfig) -> PacsAuth:
    if server.auth_type is AuthType.NONE:
        return NoAuth()
    if server.auth_type is AuthType.BASIC:
        assert server.login is not None and server.password is not None
        return BasicAuth(server.login, server.password.get_secret_value())
    raise UnsupportedAuth(
        f"server {server_id}: authType {server.auth_type.value!r} is not supported yet"
    )
