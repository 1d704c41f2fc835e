"""A test pacs-token-server: zhiva's auth server and its nginx-guarded PACS, in one process.

It answers ``/sign-user``, ``/generate-access-token`` and ``/refresh-token`` the way the real
Express server does (model-contract §4.1, including its quirks: a one-off AuthToken, refresh
tokens that are never rotated, an expired JWT answered with 500 "Unexpected error"), and guards
``/pacs/<path>`` like nginx ``/verify`` plus the Orthanc auth plugin before streaming the answer
of a real Orthanc's ``/dicom-web/<path>``. Tests drive it through ``/_test/*``: users, admin-issued
AuthTokens, token lifetimes, the response header's spelling, a delay that widens races,
revocation, call counters and the list of every token issued (to look for leaks in logs).

Differences from the real stack, on purpose: the signing key lives only in memory; tokens carry a
random ``jti`` so that no two are equal; ``/pacs`` accepts access tokens only (the real plugin also
takes the user's current AuthToken) and refuses a request without ``Authorization`` with 401
(real nginx lets it through to Orthanc); no CORS origin list; ``iat`` and ``exp`` are
signed to the fraction of a second (jsonwebtoken writes whole seconds), so a token of a few
seconds lives all of them.

Run: ``python -m tests.support.token_server --port P --upstream http://127.0.0.1:8042
--upstream-user U --upstream-password PW`` (binds 127.0.0.1, logs to stderr, never logs tokens
or passwords).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

__all__ = ["ISSUER", "TokenServerConfig", "create_app", "main"]

ISSUER = "zhiva.ai"
HOUR = 3600.0
DAY = 24 * HOUR
COUNTERS = (
    "sign_in",
    "sign_in_failed",
    "exchange",
    "exchange_failed",
    "refresh",
    "refresh_failed",
    "pacs_ok",
    "pacs_rejected",
    "failed",
)

log = logging.getLogger("token_server")
T = TypeVar("T")
HeaderName = Literal["Authorization", "Authentication"]


@dataclass
class TokenServerConfig:
    """How the server starts; lifetimes, header spelling and delay can change at runtime."""

    upstream: str = "http://127.0.0.1:8042"
    upstream_user: str = ""
    upstream_password: str = field(default="", repr=False)
    public_url: str = ""  # when set, AuthTokens carry tokenServer, refreshServer and pacs claims
    access_ttl: float = DAY
    refresh_ttl: float = 30 * DAY
    auth_ttl: float = DAY
    header_name: HeaderName = "Authorization"
    bearer_prefix: bool = True
    delay: float = 0.0
    upstream_timeout: float = 300.0


@dataclass
class _Behaviour:
    access_ttl: float
    refresh_ttl: float
    auth_ttl: float
    header_name: HeaderName
    bearer_prefix: bool
    delay: float


@dataclass
class _User:
    username: str
    password: str = field(repr=False)
    name: str
    can_edit: bool
    auth_token: str | None = field(default=None, repr=False)


class _Refusal(Exception):
    """An answer other than success: status and message as the client sees them, and a reason
    for the log (never containing a token)."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.message = message
        self.reason = reason


class _JwtRejected(Exception):
    """jsonwebtoken's verify() failing: bad signature, wrong issuer, malformed, expired."""


def _missing() -> _Refusal:
    return _Refusal(401, "Missing Token", "no Authorization header")


def _invalid(reason: str) -> _Refusal:
    return _Refusal(403, "Invalid Token", reason)


def _unexpected(reason: str) -> _Refusal:
    return _Refusal(500, "Unexpected error", reason)


def _trim_jwt(header: str) -> str:
    """The token in an Authorization value, with or without a case-insensitive Bearer prefix."""
    if header.lower().startswith("bearer"):
        return header[len("bearer") :].strip()
    return header


class _Signer:
    """RS256 with a key pair made in memory; an expired token refused like jsonwebtoken does.

    Unlike jsonwebtoken, ``iat`` and ``exp`` keep the fraction of a second (PyJWT and the
    clients read them as numbers), and expiry is judged against the clock to the fraction too:
    a token of a few seconds, as the tests ask for, lives all of them and no longer, where one
    signed in whole seconds could lose up to one.
    """

    def __init__(self) -> None:
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public = self._private.public_key()

    def sign(self, claims: dict[str, Any], ttl: float) -> str:
        iat = time.time()
        payload = {
            **claims,
            "iat": iat,
            "exp": iat + ttl,
            "iss": ISSUER,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._private, algorithm="RS256")

    def verify(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._public,
                algorithms=["RS256"],
                issuer=ISSUER,
                options={"verify_exp": False, "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise _JwtRejected(type(exc).__name__) from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise _JwtRejected("exp missing")
        if time.time() >= exp:
            raise _JwtRejected("jwt expired")
        return claims


class _TokenService:
    """Users, the tokens issued to them and the call counters, all behind one lock."""

    def __init__(self, config: TokenServerConfig) -> None:
        self.behaviour = _Behaviour(
            access_ttl=config.access_ttl,
            refresh_ttl=config.refresh_ttl,
            auth_ttl=config.auth_ttl,
            header_name=config.header_name,
            bearer_prefix=config.bearer_prefix,
            delay=config.delay,
        )
        self._public_url = config.public_url.rstrip("/")
        self._signer = _Signer()
        self._lock = threading.Lock()
        self._users: dict[str, _User] = {}
        self._access: dict[str, str] = {}  # live (not revoked) access token -> username
        self._refresh: dict[str, str] = {}  # refresh token -> username
        self._issued: list[str] = []
        self._counters: Counter[str] = Counter()

    # -- test controls -------------------------------------------------------------------------

    def put_user(self, username: str, password: str, name: str | None, can_edit: bool) -> None:
        with self._lock:
            user = self._users.get(username)
            if user is None:
                self._users[username] = _User(username, password, name or username, can_edit)
            else:
                user.password = password
                user.name = name or user.name
                user.can_edit = can_edit

    def admin_issue(self, username: str, aud: str | None) -> str:
        """Like the admin /generate-token: a new AuthToken that replaces the user's current one."""
        with self._lock:
            user = self._users.get(username)
            if user is None:
                raise _Refusal(400, "User doesn't exists", "unknown user")
            return self._issue_auth_token(user, aud)

    def revoke_access(self) -> int:
        with self._lock:
            revoked = len(self._access)
            self._access.clear()
            return revoked

    def count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1
            if name.endswith("_failed"):
                self._counters["failed"] += 1

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {name: self._counters[name] for name in COUNTERS}

    def reset_counters(self) -> None:
        with self._lock:
            self._counters.clear()

    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    # -- the contract ---------------------------------------------------------------------------

    def sign_in(self, body: dict[str, Any]) -> str:
        username, password, referer = (body.get(k) for k in ("username", "password", "referer"))
        if not isinstance(username, str) or not username:
            raise _Refusal(400, "username not valid", "username missing")
        if not isinstance(password, str) or not password:
            raise _Refusal(400, "Invalid data", "password missing")
        with self._lock:
            user = self._users.get(username)
            if user is None or not hmac.compare_digest(user.password, password):
                raise _Refusal(400, "Invalid data", "unknown user or wrong password")
            return self._issue_auth_token(user, referer if isinstance(referer, str) else None)

    def exchange(self, authorization: str | None, origin: str | None) -> tuple[str, str]:
        """AuthToken -> (AccessToken, RefreshToken); the AuthToken is used up."""
        if not authorization:
            raise _missing()
        token = _trim_jwt(authorization)
        claims = self._verify_or_500(token)
        _check_audience(claims, origin)
        with self._lock:
            user = self._users.get(str(claims.get("username")))
            if user is None or user.auth_token is None or user.auth_token != token:
                raise _invalid("auth token is not the user's current one (used or replaced)")
            user.auth_token = None
            access = self._issue(user, origin, self.behaviour.access_ttl)
            refresh = self._issue(user, origin, self.behaviour.refresh_ttl)
            self._access[access] = user.username
            self._refresh[refresh] = user.username
            return access, refresh

    def refresh(self, authorization: str | None, origin: str | None) -> str:
        """RefreshToken -> new AccessToken; the refresh token stays valid (no rotation)."""
        if not authorization:
            raise _missing()
        token = _trim_jwt(authorization)
        with self._lock:
            owner = self._refresh.get(token)
        if owner is None:
            raise _invalid("not a refresh token issued here")
        claims = self._verify_or_500(token)
        _check_audience(claims, origin)
        with self._lock:
            user = self._users.get(owner)
            if user is None or claims.get("username") != owner:
                raise _invalid("refresh token does not belong to the user")
            access = self._issue(user, origin, self.behaviour.access_ttl)
            self._access[access] = user.username
            return access

    def check_access(self, authorization: str | None, origin: str | None) -> str:
        """What nginx /verify and the Orthanc plugin decide together; returns the username."""
        if not authorization:
            raise _missing()
        token = _trim_jwt(authorization)
        try:
            claims = self._signer.verify(token)
        except _JwtRejected as exc:
            raise _invalid(f"jwt rejected: {exc}") from None
        _check_audience(claims, origin)
        with self._lock:
            owner = self._access.get(token)
        if owner is None or claims.get("username") != owner:
            raise _invalid("not a live access token (unknown or revoked)")
        return owner

    # -- helpers (the caller holds the lock where it says so) ------------------------------------

    def _verify_or_500(self, token: str) -> dict[str, Any]:
        try:
            return self._signer.verify(token)
        except _JwtRejected as exc:
            # jsonwebtoken rejects ("jwt expired", "invalid signature"...) with a message the
            # real server does not map, so it answers 500.
            raise _unexpected(f"jwt rejected: {exc}") from None

    def _issue_auth_token(self, user: _User, aud: str | None) -> str:
        """Under the lock."""
        extra: dict[str, Any] = {}
        if self._public_url:
            extra = {
                "tokenServer": f"{self._public_url}/generate-access-token",
                "refreshServer": f"{self._public_url}/refresh-token",
                "pacs": f"{self._public_url}/pacs",
            }
        token = self._issue(user, aud, self.behaviour.auth_ttl, extra)
        user.auth_token = token
        return token

    def _issue(
        self, user: _User, aud: str | None, ttl: float, extra: dict[str, Any] | None = None
    ) -> str:
        """Under the lock."""
        claims: dict[str, Any] = {
            "name": user.name,
            "username": user.username,
            "canEditResource": user.can_edit,
            **(extra or {}),
        }
        if aud:
            claims["aud"] = aud
        token = self._signer.sign(claims, ttl)
        self._issued.append(token)
        return token


def _check_audience(claims: dict[str, Any], origin: str | None) -> None:
    aud = claims.get("aud")
    if aud and aud != origin:
        raise _invalid("aud does not match Origin")


def _error(refusal: _Refusal) -> JSONResponse:
    return JSONResponse({"message": refusal.message}, status_code=refusal.status)


def _token_header(behaviour: _Behaviour, token: str) -> dict[str, str]:
    value = f"Bearer {token}" if behaviour.bearer_prefix else token
    return {behaviour.header_name: value}


async def _json_object(request: Request) -> dict[str, Any]:
    """The body as Express's json() + `request.body?.x` would see it: anything else is empty."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# -- test-control bodies ---------------------------------------------------------------------------


class _UserBody(BaseModel):
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    name: str | None = None
    canEditResource: bool = False


class _AuthTokenBody(BaseModel):
    username: str
    aud: str | None = None


class _ConfigBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_ttl: FiniteFloat | None = None
    refresh_ttl: FiniteFloat | None = None
    auth_ttl: FiniteFloat | None = None
    header_name: HeaderName | None = None
    bearer_prefix: bool | None = None
    delay: FiniteFloat | None = Field(default=None, ge=0)


# -- the PACS behind the check ---------------------------------------------------------------------


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


async def _forward(client: httpx.AsyncClient, base: str, request: Request, path: str) -> Response:
    """Orthanc's answer to the same GET/HEAD (or POST: a STOW-RS store, its body and
    Content-Type passed on), streamed: status, Content-Type, body as it comes."""
    url = f"{base}/dicom-web/{path}"
    if request.url.query:
        url = f"{url}?{request.url.query}"
    headers = {
        name: request.headers[name]
        for name in ("Accept", "Content-Type")
        if name in request.headers
    }
    content = await request.body() if request.method == "POST" else None
    try:
        upstream = await client.send(
            client.build_request(request.method, url, headers=headers, content=content),
            stream=True,
        )
    except httpx.HTTPError as exc:
        log.warning("pacs: upstream unavailable (%s)", type(exc).__name__)
        return JSONResponse({"message": "Upstream unavailable"}, status_code=502)
    passed = {
        name: upstream.headers[name]
        for name in ("content-type", "content-length")
        if name in upstream.headers
    }
    if request.method == "HEAD":
        await upstream.aclose()
        response = Response(status_code=upstream.status_code, headers=passed)
        if "content-length" not in passed:
            del response.headers["content-length"]
        return response
    return StreamingResponse(_relay(upstream), status_code=upstream.status_code, headers=passed)


# -- the app ---------------------------------------------------------------------------------------


def create_app(config: TokenServerConfig) -> FastAPI:
    service = _TokenService(config)
    base = config.upstream.rstrip("/")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        auth = httpx.BasicAuth(config.upstream_user, config.upstream_password)
        async with httpx.AsyncClient(
            auth=auth if config.upstream_user else None,
            headers={"Accept-Encoding": "identity"},
            timeout=httpx.Timeout(config.upstream_timeout, connect=5.0),
            trust_env=False,
        ) as client:
            app.state.upstream = client
            yield

    app = FastAPI(title="test pacs-token-server", lifespan=lifespan)
    app.state.token_service = service

    async def pause() -> None:
        if service.behaviour.delay > 0:
            await asyncio.sleep(service.behaviour.delay)

    def attempt(kind: str, call: Callable[[], T]) -> T | JSONResponse:
        try:
            result = call()
        except _Refusal as refusal:
            service.count(f"{kind}_failed")
            log.info("%s refused with %d: %s", kind, refusal.status, refusal.reason)
            return _error(refusal)
        service.count(kind)
        return result

    @app.post("/sign-user", response_model=None)
    async def sign_user(request: Request) -> JSONResponse:
        await pause()
        body = await _json_object(request)
        token = attempt("sign_in", lambda: service.sign_in(body))
        if isinstance(token, JSONResponse):
            return token
        log.info("sign_in ok for %r", body.get("username"))
        return JSONResponse({"token": token})

    async def with_token(
        kind: str, request: Request, call: Callable[[str | None, str | None], T]
    ) -> T | JSONResponse:
        """``call(authorization, origin)`` after the configured pause; the success is logged."""
        await pause()
        origin = request.headers.get("origin")
        result = attempt(kind, lambda: call(request.headers.get("authorization"), origin))
        if not isinstance(result, JSONResponse):
            log.info("%s ok (origin %r)", kind, origin)
        return result

    @app.post("/generate-access-token", response_model=None)
    async def generate_access_token(request: Request) -> Response:
        tokens = await with_token("exchange", request, service.exchange)
        if isinstance(tokens, JSONResponse):
            return tokens
        access, refresh = tokens
        return HTMLResponse(refresh, headers=_token_header(service.behaviour, access))

    @app.post("/refresh-token", response_model=None)
    async def refresh_token(request: Request) -> Response:
        access = await with_token("refresh", request, service.refresh)
        if isinstance(access, JSONResponse):
            return access
        return Response(status_code=200, headers=_token_header(service.behaviour, access))

    @app.api_route("/pacs/{path:path}", methods=["GET", "HEAD", "POST"], response_model=None)
    async def pacs(path: str, request: Request) -> Response:
        try:
            service.check_access(
                request.headers.get("authorization"), request.headers.get("origin")
            )
        except _Refusal as refusal:
            service.count("pacs_rejected")
            log.info("pacs refused with %d: %s", refusal.status, refusal.reason)
            return _error(refusal)
        service.count("pacs_ok")
        client: httpx.AsyncClient = request.app.state.upstream
        return await _forward(client, base, request, path)

    @app.get("/_test/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/_test/users")
    async def put_user(body: _UserBody) -> dict[str, str]:
        service.put_user(body.username, body.password, body.name, body.canEditResource)
        return {"username": body.username}

    @app.post("/_test/auth-token", response_model=None)
    async def auth_token(body: _AuthTokenBody) -> JSONResponse:
        try:
            token = service.admin_issue(body.username, body.aud)
        except _Refusal as refusal:
            return _error(refusal)
        return JSONResponse({"token": token})

    @app.post("/_test/config")
    async def set_config(body: _ConfigBody) -> dict[str, Any]:
        for name, value in body.model_dump(exclude_none=True).items():
            setattr(service.behaviour, name, value)
        return asdict(service.behaviour)

    @app.post("/_test/revoke-access")
    async def revoke_access() -> dict[str, int]:
        revoked = service.revoke_access()
        log.info("revoked %d access tokens", revoked)
        return {"revoked": revoked}

    @app.get("/_test/counters")
    async def counters() -> dict[str, int]:
        return service.counters()

    @app.post("/_test/reset-counters")
    async def reset_counters() -> dict[str, int]:
        service.reset_counters()
        return service.counters()

    @app.get("/_test/issued")
    async def issued() -> dict[str, list[str]]:
        return {"tokens": service.issued()}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.token_server",
        description="Test pacs-token-server with a token-checking proxy in front of Orthanc.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Orthanc base URL (without /dicom-web)")
    parser.add_argument("--upstream-user", default="")
    parser.add_argument("--upstream-password", default="")
    parser.add_argument("--public-url", help="base URL put in AuthTokens' server claims")
    parser.add_argument("--access-ttl", type=float, default=DAY)
    parser.add_argument("--refresh-ttl", type=float, default=30 * DAY)
    parser.add_argument("--auth-ttl", type=float, default=DAY)
    parser.add_argument("--header-name", choices=["Authorization", "Authentication"])
    parser.add_argument("--no-bearer-prefix", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    config = TokenServerConfig(
        upstream=args.upstream,
        upstream_user=args.upstream_user,
        upstream_password=args.upstream_password,
        public_url=args.public_url or f"http://127.0.0.1:{args.port}",
        access_ttl=args.access_ttl,
        refresh_ttl=args.refresh_ttl,
        auth_ttl=args.auth_ttl,
        header_name=args.header_name or "Authorization",
        bearer_prefix=not args.no_bearer_prefix,
    )
    uvicorn.run(
        create_app(config),
        host="127.0.0.1",
        port=args.port,
        access_log=False,
        log_config=None,
        log_level=args.log_level.lower(),
    )


if __name__ == "__main__":
    main()
