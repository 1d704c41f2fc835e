"""Token values and what model-proxy reads from them.

The proxy holds no key to verify the token server's signatures; it only reads ``exp`` and
``aud`` to know when to refresh and which ``Origin`` to send. Token values never appear in
``repr``, logs or error messages.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import jwt

__all__ = ["TokenSet", "audience", "expires_at"]


def _claims(token: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, options={"verify_signature": False, "verify_exp": False, "verify_aud": False}
        )
        return claims
    except jwt.PyJWTError:
        return {}  # an opaque token from a third-party server: nothing to read


def expires_at(token: str) -> float | None:
    """The token's ``exp`` as a Unix time, or None when it has none or is not a JWT."""
    exp = _claims(token).get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def audience(token: str) -> str | None:
    """The token's ``aud`` claim (the viewer origin it was minted for), if it has one."""
    aud = _claims(token).get("aud")
    if isinstance(aud, list):
        aud = aud[0] if aud else None
    return aud if isinstance(aud, str) and aud else None


@dataclass(frozen=True)
class TokenSet:
    """The access and refresh tokens of one server, as kept in the token store."""

    fingerprint: str
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    origin: str | None = None
    obtained_at: float = field(default_factory=time.time)

    @property
    def access_expires_at(self) -> float | None:
        return expires_at(self.access_token)

    @property
    def refresh_expires_at(self) -> float | None:
        return expires_at(self.refresh_token) if self.refresh_token else None

    def access_usable(self, margin: float, now: float | None = None) -> bool:
        """True unless the access token expires within ``margin`` seconds."""
        expiry = self.access_expires_at
        return expiry is None or expiry - (now or time.time()) > margin

    def refresh_usable(self, now: float | None = None) -> bool:
        if self.refresh_token is None:
            return False
        expiry = self.refresh_expires_at
        return expiry is None or expiry > (now or time.time())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSet:
        return cls(
            fingerprint=str(data["fingerprint"]),
            access_token=str(data["access_token"]),
            refresh_token=data.get("refresh_token"),
            origin=data.get("origin"),
            obtained_at=float(data.get("obtained_at", 0.0)),
        )
