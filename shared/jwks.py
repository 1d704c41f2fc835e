"""The site's identity provider (OIDC): its settings, and its signing keys (the JWKS), cached.

:class:`JwtIssuer` is ``MODEL_PROXY_JWT_ISSUER``, ``MODEL_PROXY_JWT_AUDIENCE`` and
``MODEL_PROXY_JWKS_URL`` with their limits, checked at start-up (an issuer without an audience,
or the reverse, is a :class:`ConfigError` naming the setting).

:class:`JwksCache` holds the provider's public signing keys. It fetches them lazily, on the
first token, from ``MODEL_PROXY_JWKS_URL`` or else from the ``jwks_uri`` of the issuer's
discovery document (``<issuer>/.well-known/openid-configuration``); each fetch has a deadline and
a size cap. Keys are kept for ``max_age`` seconds (then fetched again; while the provider is away
the old keys stay in use), and a token signed with a key id (``kid``) the cache does not know
makes it fetch again, at most once per ``min_refresh`` seconds: a flood of made-up key ids costs
the provider one request per interval. A fetch that fails is :class:`IdentityProviderUnavailable`
(503), never a hang; until the interval has passed, further requests fail at once. One fetch
runs at a time, outside the lock: tokens of known keys never wait for it.

The keys come over https only (plain http from a loopback host only), from the settings and from
the discovery document alike, and a discovery document must name the configured issuer.

Blocking I/O: the API calls :meth:`JwksCache.signing_key` from its threadpool.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
import urllib3

from model_proxy.shared.errors import ConfigError, IdentityProviderUnavailable
from model_proxy.shared.http import new_session
from model_proxy.shared.settings import Settings

__all__ = ["DISCOVERY_PATH", "LOOPBACK_HOSTS", "JwksCache", "JwtIssuer", "SigningKey"]

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# key types of asymmetric algorithms; a symmetric ("oct") key in a JWKS is never used
_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})


@dataclass(frozen=True)
class JwtIssuer:
    """Whose tokens the API accepts, where their keys are, and the limits of fetching them."""

    issuer: str
    audience: str
    jwks_url: str | None  # None: the discovery document's jwks_uri
    leeway: float
    timeout: float
    min_refresh: float
    max_age: float
    max_bytes: int

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + DISCOVERY_PATH

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtIssuer | None:
        """The issuer the settings configure; None without one. ConfigError when half set."""
        issuer = (settings.jwt_issuer or "").strip()
        audience = (settings.jwt_audience or "").strip()
        jwks_url = (settings.jwks_url or "").strip() or None
        if issuer and not audience:
            raise ConfigError(
                "MODEL_PROXY_JWT_AUDIENCE is not set: with MODEL_PROXY_JWT_ISSUER it names the "
                "audience (aud) the tokens must be issued for"
            )
        if audience and not issuer:
            raise ConfigError(
                "MODEL_PROXY_JWT_ISSUER is not set: with MODEL_PROXY_JWT_AUDIENCE it names the "
                "identity provider (iss) whose tokens are accepted"
            )
        if jwks_url and not issuer:
            raise ConfigError("MODEL_PROXY_JWKS_URL is set without MODEL_PROXY_JWT_ISSUER")
        if not issuer:
            return None
        for name, url in (("MODEL_PROXY_JWT_ISSUER", issuer), ("MODEL_PROXY_JWKS_URL", jwks_url)):
            problem = None if url is None else _url_problem(url)
            if problem is not None:
                raise ConfigError(f"{name} {problem}")
        return cls(
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            leeway=settings.jwt_leeway_seconds,
            timeout=settings.jwks_timeout_seconds,
            min_refresh=settings.jwks_min_refresh_seconds,
            max_age=settings.jwks_max_age_seconds,
            max_bytes=settings.jwks_max_bytes,
        )


def _url_problem(url: str) -> str | None:
    """Why the provider's keys cannot be trusted from ``url``, or None: signing keys come over
    https, or plain http from this machine only (a test or a sidecar provider)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" in parts.netloc or not parts.hostname:
        return "is not an http(s) URL with a host and without userinfo"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return (
            "must be an https URL: signing keys fetched over plain http could be replaced on "
            "the way (http is allowed for 127.0.0.1, ::1 and localhost only)"
        )
    return None


@dataclass(frozen=True)
class SigningKey:
    """One public signing key of the JWKS: its key type (``kty``), the algorithm it declares
    (``alg``, None when it does not), and the key for pyjwt."""

    kty: str
    alg: str | None
    key: Any


class JwksCache:
    """The provider's signing keys, by key id; see the module's description."""

    def __init__(
        self,
        issuer: JwtIssuer,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._session = session or new_session(2)
        self._clock = clock
        self._lock = threading.Lock()
        self._fetched_once = threading.Condition(self._lock)  # the first fetch has ended
        self._jwks_url = issuer.jwks_url
        self._keys: dict[str, SigningKey] = {}  # by kid; "" for a key without one
        self._fetched: float | None = None  # the last fetch that succeeded
        self._attempted: float | None = None  # the last fetch, whatever its outcome
        self._failed = False  # whether that fetch failed
        self._fetching = False  # a fetch runs now (in one thread; never under the lock)

    @property
    def jwks_url(self) -> str | None:
        """Where the keys are (None until the discovery document named it)."""
        return self._jwks_url

    def signing_key(self, kid: str | None) -> SigningKey | None:
        """The key of ``kid`` (or the only key, for a token without ``kid``); None when the
        provider has no such key. IdentityProviderUnavailable when it cannot be asked.

        One fetch at a time, and never under the lock: while it runs, a known key is served
        (even one past its age) and a key id not known is 503 at once; only while the very first
        fetch runs (no key is known yet) do tokens wait for it, at most the fetch's timeout."""
        with self._lock:
            if self._fetching and self._fetched is None:
                self._fetched_once.wait_for(lambda: not self._fetching, self._issuer.timeout)
            now = self._clock()
            known = self._find(kid)
            fresh = self._fetched is not None and now - self._fetched < self._issuer.max_age
            if known is not None and (fresh or self._fetching):
                return known
            if self._fetching:
                raise IdentityProviderUnavailable(
                    "the identity provider's signing keys are being fetched; try again shortly"
                )
            if self._attempted is not None and now - self._attempted < self._issuer.min_refresh:
                if known is None and self._failed:
                    raise IdentityProviderUnavailable(
                        "the identity provider could not be reached a moment ago; try again shortly"
                    )
                return known
            self._attempted = now
            self._fetching = True
        try:
            self._refresh(now)
        except IdentityProviderUnavailable as error:
            if known is None:
                raise
            log.warning("%s; the keys fetched before stay in use", error.message)
            return known
        with self._lock:
            return self._find(kid)

    def fetch(self) -> int:
        """Fetch the keys now (``model-proxy check``): how many signing keys there are."""
        with self._lock:
            now = self._clock()
            self._attempted = now
            self._fetching = True
        self._refresh(now)
        with self._lock:
            return len(self._keys)

    def _find(self, kid: str | None) -> SigningKey | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        """Fetch the keys (the caller set ``_fetching``; this clears it), without the lock."""
        try:
            keys = self._fetch()
        except BaseException:
            with self._lock:
                self._failed = True
                self._fetching = False
                self._fetched_once.notify_all()
            raise
        with self._lock:
            self._keys = keys
            self._fetched = now
            self._failed = False
            self._fetching = False
            self._fetched_once.notify_all()
        log.info("fetched %d signing keys from %s", len(keys), self._jwks_url)

    def _fetch(self) -> dict[str, SigningKey]:
        jwks_url = self._jwks_url
        if jwks_url is None:
            discovery = self._get_json(self._issuer.discovery_url, "discovery document")
            if discovery.get("issuer") != self._issuer.issuer:
                raise IdentityProviderUnavailable(
                    f"the discovery document of {self._issuer.issuer} names another issuer: it "
                    "must name MODEL_PROXY_JWT_ISSUER exactly (OpenID Connect Discovery 4.3)"
                )
            uri = discovery.get("jwks_uri")
            jwks_url = uri if isinstance(uri, str) else ""
            problem = _url_problem(jwks_url) if jwks_url else "is missing"
            if problem is not None:
                raise IdentityProviderUnavailable(
                    f"the jwks_uri of the discovery document of {self._issuer.issuer} {problem}"
                )
        keys = _signing_keys(self._get_json(jwks_url, "JWKS"))
        if not keys:
            raise IdentityProviderUnavailable(f"the JWKS at {jwks_url} has no signing key")
        self._jwks_url = jwks_url
        return keys

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        """The JSON object at ``url``, within the timeout (all of it, however slowly the
        provider sends it) and the size cap."""
        deadline = time.monotonic() + self._issuer.timeout
        failure = f"the identity provider's {what} at {url}"
        try:
            with self._session.get(
                url, timeout=self._issuer.timeout, stream=True, allow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise IdentityProviderUnavailable(
                        f"{failure} answered HTTP {response.status_code}"
                    )
                body = bytearray()
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise IdentityProviderUnavailable(f"{failure} did not arrive in time")
                    _limit_wait(response, remaining)
                    chunk = response.raw.read1(64 * 1024, decode_content=True)  # what came
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > self._issuer.max_bytes:
                        raise IdentityProviderUnavailable(
                            f"{failure} is larger than {self._issuer.max_bytes} bytes"
                        )
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
            if time.monotonic() >= deadline:
                raise IdentityProviderUnavailable(f"{failure} did not arrive in time") from None
            raise IdentityProviderUnavailable(f"{failure} could not be fetched") from None
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise IdentityProviderUnavailable(f"{failure} is not a JSON object")
        return document


def _limit_wait(response: requests.Response, seconds: float) -> None:
    """Let the next read of ``response`` wait ``seconds`` at most: the read timeout of urllib3
    starts again with every byte, so a provider that drips its answer would never trip it."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:  # a connection that closes after the answer let go of it: the file holds it
        body_file = getattr(getattr(response.raw, "_fp", None), "fp", None)
        sock = getattr(getattr(body_file, "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        sock.settimeout(max(seconds, 0.001))


def _signing_keys(jwks: dict[str, Any]) -> dict[str, SigningKey]:
    """The asymmetric signing keys of a JWKS, by kid; keys pyjwt cannot use are left out."""
    found: dict[str, SigningKey] = {}
    entries = jwks.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("kty") not in _KEY_TYPES:
            continue
        if entry.get("use") not in (None, "sig"):
            continue
        alg = entry.get("alg")
        try:
            key = jwt.PyJWK.from_dict(entry).key
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        kid = entry.get("kid")
        found[kid if isinstance(kid, str) else ""] = SigningKey(
            entry["kty"], alg if isinstance(alg, str) else None, key
        )
    return found
