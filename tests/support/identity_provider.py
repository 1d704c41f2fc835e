"""A test OIDC identity provider: real RSA, EC and Ed25519 keys, and a real loopback HTTP server
(in a thread) that answers the discovery document and the JWKS, as Keycloak lays them out.

Tests make tokens with :meth:`IdentityProvider.token` (valid by default; any claim or header can
be changed or left out), rotate keys with :meth:`IdentityProvider.add_key`, count JWKS fetches,
and make the provider slow (``delay``, ``drip``, ``hold``) to see that the API does not hang on
it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["AUDIENCE", "IdentityProvider", "KeyKind", "identity_provider"]

AUDIENCE = "model-proxy"
REALM = "/realms/hospital"
JWKS_PATH = REALM + "/protocol/openid-connect/certs"
KeyKind = Literal["RSA", "EC", "OKP"]
_ALGORITHM: dict[str, str] = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


@dataclass
class _Key:
    kid: str
    kind: KeyKind
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(_ALGORITHM[self.kind])
        data: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@dataclass
class IdentityProvider:
    """The provider's state; its HTTP server reads it on every request."""

    base_url: str
    keys: list[_Key] = field(default_factory=list)
    jwks_fetches: int = 0
    discovery_fetches: int = 0
    delay: float = 0.0
    drip: float = 0.0  # seconds between the bytes of each answer (0: all at once)
    hold: threading.Event | None = None  # while set and not yet set, every answer waits on it
    requests_seen: int = 0
    discovery: dict[str, Any] = field(default_factory=dict)  # changes to the discovery document

    @property
    def issuer(self) -> str:
        return self.base_url + REALM

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    def add_key(self, kind: KeyKind = "RSA", kid: str | None = None) -> str:
        """A new signing key in the JWKS (as a provider rotates keys); its kid."""
        private: Any
        if kind == "RSA":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "EC":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        key = _Key(kid or f"{kind.lower()}-{len(self.keys) + 1}", kind, private)
        self.keys.append(key)
        return key.kid

    def key(self, kid: str) -> _Key:
        return next(key for key in self.keys if key.kid == kid)

    def token(
        self, kid: str | None = None, *, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """A token signed with key ``kid`` (default: the first), valid for five minutes with
        scope ``read:model``; a claim given as ``None`` is left out."""
        key = self.key(kid) if kid else self.keys[0]
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "3f1c9a52-7e0d-4b8e-9a61-2d4c5b6e7f80",
            "iat": now,
            "exp": now + 300,
            "scope": "openid profile read:model",
        }
        payload.update(claims)
        payload = {name: value for name, value in payload.items() if value is not None}
        return jwt.encode(
            payload,
            key.private,
            algorithm=_ALGORITHM[key.kind],
            headers={"kid": key.kid, **(headers or {})},
        )

    def forged_hs256(self, kid: str) -> str:
        """A valid token's claims "signed" with HS256, the secret being the PEM of key ``kid``'s
        public key (made by hand: pyjwt refuses a PEM as an HMAC secret)."""

        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        claims = jwt.decode(self.token(kid), options={"verify_signature": False})
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(claims).encode())}"
        secret = self.key(kid).public_pem()
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{part(signature)}"

    def _document(self, path: str) -> dict[str, Any] | None:
        if path == REALM + "/.well-known/openid-configuration":
            self.discovery_fetches += 1
            return {"issuer": self.issuer, "jwks_uri": self.jwks_url, **self.discovery}
        if path == JWKS_PATH:
            self.jwks_fetches += 1
            return {"keys": [key.jwk() for key in self.keys]}
        return None


@contextmanager
def identity_provider(*kinds: KeyKind) -> Iterator[IdentityProvider]:
    """A provider on a free loopback port with one key of each kind (default: one RSA key)."""
    provider: IdentityProvider

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.requests_seen += 1
            if provider.hold is not None:
                provider.hold.wait(30)
            time.sleep(provider.delay)
            document = provider._document(self.path)
            body = json.dumps(document).encode()
            self.send_response(404 if document is None else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if not provider.drip:
                    self.wfile.write(body)
                for byte in body if provider.drip else b"":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(provider.drip)
            except OSError:  # the client gave up
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    provider = IdentityProvider(f"http://127.0.0.1:{server.server_address[1]}")
    for kind in kinds or ("RSA",):
        provider.add_key(kind)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="identity-provider", daemon=True
    )
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
