"""What ``serve`` does with requests without credentials, for the address it listens on.

``MODEL_PROXY_ANONYMOUS`` (or ``serve --anonymous``) decides when set. Unset, a loopback address
means ``viewer`` (only this machine can ask); any other address means ``none`` when a credential
source is configured (an API key in the key file, or an OIDC issuer: those who hold one may
ask, nobody else), and no decision at all otherwise, which ``serve`` refuses to start with.
``model-proxy check`` reports the same decision.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from model_proxy.shared.api_keys import ApiKeyReader
from model_proxy.shared.settings import Settings

__all__ = ["AnonymousDecision", "credential_sources", "decide_anonymous", "is_loopback"]


@dataclass(frozen=True)
class AnonymousDecision:
    """The anonymous access of ``serve --host host`` (None: undecided), and why."""

    anonymous: Literal["viewer", "none"] | None
    reason: str


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def credential_sources(settings: Settings) -> list[str]:
    """The credential sources configured: API keys in the key file, an OIDC issuer."""
    sources = []
    if ApiKeyReader(settings.api_keys_file).has_keys():
        sources.append(f"API keys in {settings.api_keys_file}")
    if (settings.jwt_issuer or "").strip():
        sources.append("an OIDC issuer (MODEL_PROXY_JWT_ISSUER)")
    return sources


def decide_anonymous(settings: Settings, host: str) -> AnonymousDecision:
    if settings.anonymous is not None:
        return AnonymousDecision(settings.anonymous, "MODEL_PROXY_ANONYMOUS decides")
    if is_loopback(host):
        return AnonymousDecision("viewer", f"{host} is loopback: only this machine can ask")
    sources = credential_sources(settings)
    if sources:
        return AnonymousDecision("none", f"{' and '.join(sources)} configured, on {host}")
    return AnonymousDecision(
        None,
        f"serve --host {host} lets other machines ask for results derived from patient data: "
        "decide who may, with MODEL_PROXY_ANONYMOUS=viewer (requests without credentials, as "
        "the zhiva viewer sends them) or =none (refused), or create API keys with "
        "`model-proxy keys add NAME`, or configure an OIDC issuer (MODEL_PROXY_JWT_ISSUER)",
    )
