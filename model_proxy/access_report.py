"""The access settings, as ``model-proxy check`` reports them: who may ask without credentials
(for the address ``serve`` will listen on), how many API keys there are (never the keys), the
OIDC issuer, audience and signing keys (fetched, to see that they can be), and the CORS
allowlist."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model_proxy.anonymous import decide_anonymous
from model_proxy.shared.api_keys import ApiKeyFile
from model_proxy.shared.errors import ConfigError, IdentityProviderUnavailable
from model_proxy.shared.jwks import JwksCache, JwtIssuer
from model_proxy.shared.settings import Settings

__all__ = ["AccessRow", "access_rows"]


@dataclass(frozen=True)
class AccessRow:
    setting: str
    value: str
    status: str  # "ok", "down" (the identity provider could not be asked), "unset"
    detail: str


def access_rows(settings: Settings, host: str, timeout: float) -> list[AccessRow]:
    """The rows of the access table; raises ConfigError for half an OIDC configuration."""
    issuer = JwtIssuer.from_settings(settings)
    return [
        _anonymous(settings, host),
        _api_keys(settings),
        *_oidc(issuer, timeout),
        AccessRow(
            "cors origins",
            "any web page" if "*" in settings.cors_origins else str(len(settings.cors_origins)),
            "ok",
            ", ".join(settings.cors_origins),
        ),
        AccessRow(
            "allowed hosts",
            "any host" if "*" in settings.allowed_hosts else str(len(settings.allowed_hosts)),
            "ok",
            ", ".join([*settings.allowed_hosts, "IP addresses"]),
        ),
    ]


def _anonymous(settings: Settings, host: str) -> AccessRow:
    decision = decide_anonymous(settings, host)
    if decision.anonymous is None:
        return AccessRow(
            "anonymous",
            "undecided",
            "down",
            f"serve --host {host} refuses to start: set MODEL_PROXY_ANONYMOUS, or configure "
            "API keys or an OIDC issuer",
        )
    return AccessRow("anonymous", decision.anonymous, "ok", decision.reason)


def _api_keys(settings: Settings) -> AccessRow:
    try:
        count = len(ApiKeyFile(settings.api_keys_file).load())
    except ConfigError as error:
        return AccessRow("api keys", "unreadable", "down", error.message)
    return AccessRow("api keys", str(count), "ok", f"in {settings.api_keys_file}")


def _oidc(issuer: JwtIssuer | None, timeout: float) -> list[AccessRow]:
    if issuer is None:
        return [AccessRow("oidc issuer", "not configured", "unset", "")]
    keys = JwksCache(dataclasses.replace(issuer, timeout=min(timeout, issuer.timeout)))
    try:
        count = keys.fetch()
        status, detail = "ok", f"{count} signing key{'s' if count != 1 else ''}"
    except IdentityProviderUnavailable as error:
        status, detail = "down", error.message
    return [
        AccessRow("oidc issuer", issuer.issuer, "ok", f"audience {issuer.audience}"),
        AccessRow("jwks", keys.jwks_url or issuer.discovery_url, status, detail),
    ]
