"""OIDC bearer tokens: a JWT of the site's identity provider, verified, becomes a principal.

A token is accepted when it is signed by a key of the issuer's JWKS with an asymmetric algorithm
(RS*, PS*, ES*, EdDSA: never ``none``, never HS*, so a token "signed" with the public key as an
HMAC secret is refused), and its ``iss``, ``aud``, ``exp`` (required) and ``nbf`` hold, with
``MODEL_PROXY_JWT_LEEWAY_SECONDS`` of clock skew. Its scopes (a space-separated ``scope``
string, or ``scp`` as a string or a list) decide the role: ``admin:model`` an admin,
``read:model`` a viewer; neither is :class:`InsufficientScope` (403).

The principal's name is ``oidc:<sub>``: stable across tokens, and never the name of an API key
(key names cannot start with ``oidc:``). A token is never logged, nor put in a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from model_proxy.shared.api_keys import OIDC_NAME_PREFIX, Role
from model_proxy.shared.errors import InsufficientScope, InvalidCredentials
from model_proxy.shared.jwks import JwksCache, JwtIssuer

__all__ = [
    "ADMIN_SCOPE",
    "ALGORITHMS",
    "NAME_PREFIX",
    "VIEWER_SCOPE",
    "BearerTokenVerifier",
    "TokenHolder",
    "looks_like_jwt",
]

ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
VIEWER_SCOPE = "read:model"
ADMIN_SCOPE = "admin:model"
NAME_PREFIX = OIDC_NAME_PREFIX
# which key type (kty) signs with each family of algorithms
_KEY_TYPE = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# three base64url parts; the signature may be empty (as in an unsigned token, refused later)
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def looks_like_jwt(credential: str) -> bool:
    """Whether a credential has the form of a JWT (API keys have no dots)."""
    return _JWT.fullmatch(credential) is not None


@dataclass(frozen=True)
class TokenHolder:
    """Whom a verified token names, and the role its scopes grant."""

    name: str
    role: Role


class BearerTokenVerifier:
    """Verifies bearer tokens of one issuer against its JWKS (blocking: call from a thread)."""

    def __init__(self, issuer: JwtIssuer, keys: JwksCache) -> None:
        self._issuer = issuer
        self._keys = keys

    def verify(self, token: str) -> TokenHolder:
        """The holder of ``token``; InvalidCredentials, InsufficientScope, or
        IdentityProviderUnavailable when the signing keys cannot be fetched."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid() from None
        if not isinstance(header, dict):
            raise _invalid()
        alg, kid = header.get("alg"), header.get("kid")
        # a list or an object as alg would make the membership test raise: check the type first
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise _invalid()
        if not (kid is None or isinstance(kid, str)):
            raise _invalid()
        key = self._keys.signing_key(kid)
        if key is None or key.kty != _KEY_TYPE[alg[:2]] or key.alg not in (None, alg):
            raise _invalid()
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self._issuer.audience,
                issuer=self._issuer.issuer,
                leeway=self._issuer.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid() from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise _invalid()
        return TokenHolder(NAME_PREFIX + subject, _role(_scopes(claims)))


def _invalid() -> InvalidCredentials:
    return InvalidCredentials("the credential is not recognised")


def _scopes(claims: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        words: Iterable[object] = value.split() if isinstance(value, str) else ()
        if isinstance(value, list):
            words = value
        found.update(word for word in words if isinstance(word, str))
    return found


def _role(scopes: set[str]) -> Role:
    if ADMIN_SCOPE in scopes:
        return "admin"
    if VIEWER_SCOPE in scopes:
        return "viewer"
    raise InsufficientScope(
        f"the token grants neither {VIEWER_SCOPE} nor {ADMIN_SCOPE}: ask the identity "
        "provider's administrator for one of these scopes"
    )
