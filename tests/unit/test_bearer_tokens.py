"""OIDC bearer tokens (broker/bearer_tokens.py, shared/jwks.py): real keys, a real loopback
identity provider, and the verdict on each kind of token; then the same through the API."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from devtools.processes import free_port
from model_proxy.broker.bearer_tokens import BearerTokenVerifier, TokenHolder, looks_like_jwt
from model_proxy.shared.api_keys import ApiKeyFile
from model_proxy.shared.errors import (
    ConfigError,
    IdentityProviderUnavailable,
    InsufficientScope,
    InvalidCredentials,
)
from model_proxy.shared.jwks import JwksCache, JwtIssuer
from model_proxy.shared.settings import Settings
from tests.support.identity_provider import AUDIENCE, IdentityProvider, identity_provider
from tests.unit.test_access import _api as access_api

SUBJECT = "3f1c9a52-7e0d-4b8e-9a61-2d4c5b6e7f80"
JOB = "/jobs/0123456789abcdef0123456789abcdef"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with identity_provider("RSA", "EC", "OKP") as started:
        yield started


def _issuer(issuer: str, **values: Any) -> JwtIssuer:
    found = JwtIssuer.from_settings(Settings(jwt_issuer=issuer, jwt_audience=AUDIENCE, **values))
    assert found is not None
    return found


def _verifier(
    provider: IdentityProvider, clock: Clock | None = None, **values: Any
) -> BearerTokenVerifier:
    issuer = _issuer(provider.issuer, **values)
    return BearerTokenVerifier(issuer, JwksCache(issuer, clock=clock or Clock()))


def _invalid(verifier: BearerTokenVerifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except InvalidCredentials as error:
        assert token not in error.message
        return True
    return False


def _claims(provider: IdentityProvider) -> dict[str, Any]:
    return jwt.decode(provider.token(), options={"verify_signature": False})


# --- the verdict on a token ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RSA", "EC", "OKP"])
def test_a_valid_token_names_its_subject_with_the_viewer_role(
    provider: IdentityProvider, kind: str
) -> None:
    kid = next(key.kid for key in provider.keys if key.kind == kind)
    holder = _verifier(provider).verify(provider.token(kid))
    assert holder == TokenHolder(f"oidc:{SUBJECT}", "viewer")


@pytest.mark.parametrize(
    ("claims", "role"),
    [
        ({"scope": "openid admin:model"}, "admin"),
        ({"scope": "read:model admin:model"}, "admin"),
        ({"scope": None, "scp": ["profile", "read:model"]}, "viewer"),
        ({"scope": None, "scp": "admin:model"}, "admin"),
    ],
)
def test_the_scopes_decide_the_role(
    provider: IdentityProvider, claims: dict[str, Any], role: str
) -> None:
    assert _verifier(provider).verify(provider.token(**claims)).role == role


@pytest.mark.parametrize(
    "claims",
    [{"scope": "openid profile"}, {"scope": None}, {"scope": None, "scp": ["openid", "read"]}],
)
def test_a_valid_token_without_a_scope_of_ours_is_insufficient(
    provider: IdentityProvider, claims: dict[str, Any]
) -> None:
    with pytest.raises(InsufficientScope) as raised:
        _verifier(provider).verify(provider.token(**claims))
    assert raised.value.code == "insufficient_scope"


def test_expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway(
    provider: IdentityProvider,
) -> None:
    verifier = _verifier(provider, jwt_leeway_seconds=30)
    now = int(time.time())
    assert _invalid(verifier, provider.token(exp=now - 120))
    assert _invalid(verifier, provider.token(nbf=now + 120))
    # a clock a few seconds apart from the provider's is tolerated
    assert not _invalid(verifier, provider.token(exp=now - 10))
    assert not _invalid(verifier, provider.token(nbf=now + 10))


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-service"},
        {"aud": None},
        {"iss": "https://idp.example/realms/hospital"},
        {"iss": None},
        {"exp": None},
        {"sub": None},
        {"sub": ""},
    ],
)
def test_a_token_for_another_audience_issuer_or_without_a_required_claim_is_refused(
    provider: IdentityProvider, claims: dict[str, Any]
) -> None:
    assert _invalid(_verifier(provider), provider.token(**claims))


def test_an_audience_among_several_is_accepted(provider: IdentityProvider) -> None:
    token = provider.token(aud=["account", AUDIENCE])
    assert _verifier(provider).verify(token).name == f"oidc:{SUBJECT}"


def test_an_unsigned_token_is_refused(provider: IdentityProvider) -> None:
    unsigned = jwt.encode(_claims(provider), None, algorithm="none", headers={"kid": "rsa-1"})
    assert looks_like_jwt(unsigned)
    assert _invalid(_verifier(provider), unsigned)


def test_hs256_signed_with_the_public_key_is_refused(provider: IdentityProvider) -> None:
    assert _invalid(_verifier(provider), provider.forged_hs256("rsa-1"))


def test_a_signature_of_another_key_or_key_type_is_refused(provider: IdentityProvider) -> None:
    verifier = _verifier(provider)
    # signed with the EC key, but naming the RSA key (and the other way round)
    assert _invalid(verifier, provider.token("ec-2", headers={"kid": "rsa-1"}))
    assert _invalid(verifier, provider.token("rsa-1", headers={"kid": "ec-2"}))
    # the right key type, the wrong key
    other = provider.add_key("RSA", "rsa-other")
    assert _invalid(verifier, provider.token(other, headers={"kid": "rsa-1"}))
    assert _invalid(verifier, provider.token()[:-4] + "AAAA")


def test_garbage_in_the_form_of_a_jwt_is_refused(provider: IdentityProvider) -> None:
    verifier = _verifier(provider)
    for token in ("a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", "e30.e30.e30"):
        assert looks_like_jwt(token)
        assert _invalid(verifier, token)
    assert not looks_like_jwt("mpk_0123456789ab_c2VjcmV0")


# --- the provider's keys -------------------------------------------------------------------------


def test_a_rotated_key_is_picked_up_on_its_first_token(provider: IdentityProvider) -> None:
    clock = Clock()
    verifier = _verifier(provider, clock, jwks_min_refresh_seconds=10)
    verifier.verify(provider.token())
    assert (provider.discovery_fetches, provider.jwks_fetches) == (1, 1)
    rotated = provider.add_key("RSA", "rotated")
    clock.now += 10
    assert verifier.verify(provider.token(rotated)).name == f"oidc:{SUBJECT}"
    assert provider.jwks_fetches == 2
    verifier.verify(provider.token(rotated))
    verifier.verify(provider.token())
    assert (provider.discovery_fetches, provider.jwks_fetches) == (1, 2)  # cached


def test_a_flood_of_unknown_key_ids_fetches_the_jwks_once_per_interval(
    provider: IdentityProvider,
) -> None:
    clock = Clock()
    verifier = _verifier(provider, clock, jwks_min_refresh_seconds=10)
    verifier.verify(provider.token())
    for _ in range(50):
        forged = provider.token(headers={"kid": uuid.uuid4().hex})
        assert _invalid(verifier, forged)
        clock.now += 0.1
    assert provider.jwks_fetches == 1  # all within 10 s of the first load
    clock.now += 10
    for _ in range(20):
        assert _invalid(verifier, provider.token(headers={"kid": uuid.uuid4().hex}))
    assert provider.jwks_fetches == 2  # one refresh in the next interval


def test_keys_are_fetched_again_after_their_max_age_and_kept_while_the_provider_is_away(
    provider: IdentityProvider,
) -> None:
    clock = Clock()
    issuer = _issuer(provider.issuer, jwks_max_age_seconds=60, jwks_timeout_seconds=0.5)
    cache = JwksCache(issuer, clock=clock)
    verifier = BearerTokenVerifier(issuer, cache)
    verifier.verify(provider.token())
    clock.now += 61
    verifier.verify(provider.token())
    assert provider.jwks_fetches == 2
    # the provider is gone: the keys fetched before stay in use
    cache._jwks_url = f"http://127.0.0.1:{free_port()}/certs"
    clock.now += 61
    assert verifier.verify(provider.token()).role == "viewer"


def test_an_explicit_jwks_url_skips_the_discovery_document(provider: IdentityProvider) -> None:
    verifier = _verifier(provider, jwks_url=provider.jwks_url)
    verifier.verify(provider.token())
    assert (provider.discovery_fetches, provider.jwks_fetches) == (0, 1)


def test_an_unreachable_provider_is_unavailable_and_not_asked_again_at_once() -> None:
    verifier = _verifier_for(f"http://127.0.0.1:{free_port()}/realms/hospital")
    with identity_provider() as other:  # a token in the right form, from a key we cannot fetch
        token = other.token()
    for _ in range(2):
        with pytest.raises(IdentityProviderUnavailable) as raised:
            verifier.verify(token)
        assert raised.value.code == "idp_unavailable" and token not in raised.value.message


def _verifier_for(issuer_url: str, **values: Any) -> BearerTokenVerifier:
    issuer = _issuer(issuer_url, **values)
    return BearerTokenVerifier(issuer, JwksCache(issuer))


def test_a_provider_that_does_not_answer_in_time_is_unavailable_without_a_hang(
    provider: IdentityProvider,
) -> None:
    provider.delay = 3.0
    verifier = _verifier(provider, jwks_timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(IdentityProviderUnavailable):
        verifier.verify(provider.token())
    assert time.monotonic() - started < 2


def test_a_jwks_larger_than_the_cap_is_not_read(provider: IdentityProvider) -> None:
    verifier = _verifier(provider, jwks_max_bytes=200)
    with pytest.raises(IdentityProviderUnavailable) as raised:
        verifier.verify(provider.token())
    assert "larger than 200 bytes" in raised.value.message


# --- the settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"jwt_issuer": "https://idp.example/realms/h"}, "MODEL_PROXY_JWT_AUDIENCE"),
        ({"jwt_audience": "model-proxy"}, "MODEL_PROXY_JWT_ISSUER"),
        ({"jwks_url": "https://idp.example/certs"}, "MODEL_PROXY_JWT_ISSUER"),
        ({"jwt_issuer": "idp.example", "jwt_audience": "m"}, "MODEL_PROXY_JWT_ISSUER"),
    ],
)
def test_half_an_oidc_configuration_stops_the_start_naming_the_setting(
    tmp_path: Path, values: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _api(tmp_path, "none", **values)
    assert named in raised.value.message


def test_no_issuer_is_no_oidc() -> None:
    assert JwtIssuer.from_settings(Settings()) is None


# --- through the API -----------------------------------------------------------------------------


def _api(folder: Path, anonymous: str, **values: Any) -> TestClient:
    """The API of the access tests, with a route that shows the request's principal."""
    api = access_api(folder, anonymous, **values)

    async def whoami(request: Request) -> dict[str, object]:
        principal = request.state.principal
        return {"name": principal.name, "role": principal.role}

    api.app.add_api_route("/_whoami", whoami)  # type: ignore[attr-defined]
    return api


def _oidc_api(folder: Path, provider: IdentityProvider, **values: Any) -> TestClient:
    return _api(folder, "none", jwt_issuer=provider.issuer, jwt_audience=AUDIENCE, **values)


def test_the_api_gives_routes_the_token_holder(tmp_path: Path, provider: IdentityProvider) -> None:
    api = _oidc_api(tmp_path, provider)
    answer = api.get("/_whoami", headers={"Authorization": f"Bearer {provider.token()}"})
    assert answer.json() == {"name": f"oidc:{SUBJECT}", "role": "viewer"}
    admin = provider.token(scope="admin:model")
    assert api.get("/_whoami", headers={"Authorization": f"Bearer {admin}"}).json()["role"] == (
        "admin"
    )


def test_the_api_refuses_a_bad_token_with_401_and_does_not_echo_it(
    tmp_path: Path, provider: IdentityProvider
) -> None:
    api = _oidc_api(tmp_path, provider)
    for token in (provider.token(aud="another"), provider.token(exp=int(time.time()) - 600)):
        answer = api.get(JOB, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert answer.json()["code"] == "invalid_credentials"
        assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert token not in answer.text


def test_the_api_answers_a_token_without_our_scopes_403(
    tmp_path: Path, provider: IdentityProvider
) -> None:
    api = _oidc_api(tmp_path, provider)
    token = provider.token(scope="openid profile")
    answer = api.get(JOB, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403
    assert answer.json()["code"] == "insufficient_scope"
    assert answer.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'


def test_the_api_answers_503_when_the_provider_cannot_be_reached(tmp_path: Path) -> None:
    with identity_provider() as gone:
        token, issuer = gone.token(), gone.issuer
    api = _api(tmp_path, "none", jwt_issuer=issuer, jwt_audience=AUDIENCE)
    answer = api.get(JOB, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 503
    assert answer.json()["code"] == "idp_unavailable"
    assert token not in answer.text


def test_api_keys_still_work_beside_oidc(tmp_path: Path, provider: IdentityProvider) -> None:
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("ward-7")
    api = _oidc_api(tmp_path, provider)
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        assert api.get("/_whoami", headers=headers).json() == {"name": "ward-7", "role": "viewer"}


def test_a_token_is_not_taken_for_a_key_without_oidc(
    tmp_path: Path, provider: IdentityProvider
) -> None:
    answer = _api(tmp_path, "viewer").get(
        JOB, headers={"Authorization": f"Bearer {provider.token()}"}
    )
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_credentials"


def test_a_key_cannot_take_the_name_of_a_token_holder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ApiKeyFile(tmp_path / "api-keys.json").add(f"oidc:{SUBJECT}")


# --- malformed tokens ---------------------------------------------------------------------------


def _part(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _malformed(provider: IdentityProvider) -> dict[str, str]:
    """Tokens of every malformed kind, by what is wrong with them."""
    rsa = provider.key("rsa-1").private
    claims = _part(_claims(provider))
    nested: object = "RS256"
    for _ in range(200):
        nested = {"alg": [nested]}
    return {
        "header a list": f"{_part(['RS256'])}.{claims}.c2ln",
        "header a string": f"{_part('RS256')}.{claims}.c2ln",
        "alg a list": f"{_part({'alg': ['RS256']})}.{claims}.c2ln",
        "alg an object": f"{_part({'alg': {'RS256': 1}})}.{claims}.c2ln",
        "alg a number": f"{_part({'alg': 256})}.{claims}.c2ln",
        "alg null": f"{_part({'alg': None})}.{claims}.c2ln",
        "kid a number": f"{_part({'alg': 'RS256', 'kid': 1})}.{claims}.c2ln",
        "kid a list": f"{_part({'alg': 'RS256', 'kid': ['rsa-1']})}.{claims}.c2ln",
        "nested header": f"{_part(nested)}.{claims}.c2ln",
        "header not json": f"{_part(b'{alg: RS256')}.{claims}.c2ln",
        "header not utf-8": f"{_part(bytes([0xFF, 0xFE, 0x7B]))}.{claims}.c2ln",
        "header not base64": f"A.{claims}.c2ln",
        "claims not json": f"{_part({'alg': 'RS256', 'kid': 'rsa-1'})}.{_part(b'not json')}.c2ln",
        "huge": f"{_part({'alg': 'RS256', 'kid': 'rsa-1'})}.{'A' * 300_000}.c2ln",
        "signed claims a list": jwt.api_jws.encode(
            b"[1, 2]", rsa, algorithm="RS256", headers={"kid": "rsa-1"}
        ),
        "signed claims not json": jwt.api_jws.encode(
            b"\x00\x01", rsa, algorithm="RS256", headers={"kid": "rsa-1"}
        ),
        "sub a number": provider.token(sub=12345),
        "exp a string": provider.token(exp="tomorrow"),
        "aud an object": provider.token(aud={"model-proxy": True}),
        "iss a list": jwt.api_jws.encode(
            json.dumps({**_claims(provider), "iss": [provider.issuer]}).encode(),
            rsa,
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        ),
    }


def test_malformed_tokens_are_401_never_500(tmp_path: Path, provider: IdentityProvider) -> None:
    api = _oidc_api(tmp_path, provider)
    verifier = _verifier(provider)
    for what, token in _malformed(provider).items():
        assert _invalid(verifier, token), what
        answer = api.get(JOB, headers={"Authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()["code"]) == (401, "invalid_credentials"), what
        assert token not in answer.text


def test_an_unexpected_error_while_checking_a_credential_is_401_and_logs_no_credential(
    tmp_path: Path,
    provider: IdentityProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def trips(self: BearerTokenVerifier, token: str) -> TokenHolder:
        raise ValueError(f"cannot make sense of {token}")

    monkeypatch.setattr(BearerTokenVerifier, "verify", trips)
    token = provider.token()
    with caplog.at_level(logging.DEBUG):
        answer = _oidc_api(tmp_path, provider).get(
            JOB, headers={"Authorization": f"Bearer {token}"}
        )
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_credentials")
    assert "ValueError" in caplog.text and token not in caplog.text


# --- fetching the keys: https, the issuer, one fetch at a time, a deadline ----------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"jwt_issuer": "http://idp.example/realms/h"}, "MODEL_PROXY_JWT_ISSUER"),
        (
            {"jwt_issuer": "https://idp.example/realms/h", "jwks_url": "http://idp.example/c"},
            "MODEL_PROXY_JWKS_URL",
        ),
        ({"jwt_issuer": "http://10.0.0.8:8080/realms/h"}, "MODEL_PROXY_JWT_ISSUER"),
        ({"jwt_issuer": "http://localhost.evil.example/realms/h"}, "MODEL_PROXY_JWT_ISSUER"),
    ],
)
def test_signing_keys_over_plain_http_beyond_loopback_stop_the_start(
    tmp_path: Path, values: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _api(tmp_path, "none", jwt_audience=AUDIENCE, **values)
    assert named in raised.value.message and "https" in raised.value.message


@pytest.mark.parametrize(
    "issuer",
    [
        "https://idp.example/realms/h",
        "http://127.0.0.1:8080/realms/h",
        "http://localhost:8080/realms/h",
        "http://[::1]:8080/realms/h",
    ],
)
def test_https_or_a_loopback_provider_is_accepted(issuer: str) -> None:
    assert _issuer(issuer).issuer == issuer


def test_a_discovered_jwks_uri_over_plain_http_is_not_fetched(provider: IdentityProvider) -> None:
    provider.discovery = {"jwks_uri": "http://idp.example/realms/hospital/certs"}
    with pytest.raises(IdentityProviderUnavailable) as raised:
        _verifier(provider).verify(provider.token())
    assert "https" in raised.value.message and provider.jwks_fetches == 0


def test_a_discovery_document_of_another_issuer_is_not_trusted(provider: IdentityProvider) -> None:
    provider.discovery = {"issuer": "https://other.example/realms/hospital"}
    with pytest.raises(IdentityProviderUnavailable) as raised:
        _verifier(provider).verify(provider.token())
    assert "another issuer" in raised.value.message and provider.jwks_fetches == 0


def test_a_fetch_in_flight_holds_up_no_token_of_a_known_key(provider: IdentityProvider) -> None:
    clock = Clock()
    verifier = _verifier(provider, clock, jwks_min_refresh_seconds=10, jwks_timeout_seconds=20)
    verifier.verify(provider.token())
    seen = provider.requests_seen
    provider.hold = threading.Event()  # the provider stalls until released
    clock.now += 10
    forged = provider.token(headers={"kid": "made-up"})
    attacker = threading.Thread(target=_invalid, args=(verifier, forged))
    attacker.start()
    try:
        while provider.requests_seen == seen:  # the made-up kid's fetch reached the provider
            time.sleep(0.01)
        # a known key is served from the cache while the fetch waits on the provider
        assert verifier.verify(provider.token()).name == f"oidc:{SUBJECT}"
        # another unknown key id does not queue behind the fetch: 503 at once
        with pytest.raises(IdentityProviderUnavailable):
            verifier.verify(provider.token(headers={"kid": "made-up-too"}))
        assert attacker.is_alive() and provider.requests_seen == seen + 1
    finally:
        provider.hold.set()
        attacker.join(10)
    assert provider.jwks_fetches == 2


def test_tokens_that_come_during_the_first_fetch_wait_for_it(provider: IdentityProvider) -> None:
    """Right after a start no key is known: a burst of logins waits for the one fetch instead of
    being answered 503."""
    verifier = _verifier(provider, jwks_timeout_seconds=20)
    provider.hold = threading.Event()
    names: list[str] = []
    first = threading.Thread(target=lambda: names.append(verifier.verify(provider.token()).name))
    first.start()
    while provider.requests_seen == 0:  # the first fetch reached the provider
        time.sleep(0.01)
    others = [
        threading.Thread(target=lambda: names.append(verifier.verify(provider.token()).name))
        for _ in range(3)
    ]
    for thread in others:
        thread.start()
    time.sleep(0.2)  # they are waiting, not answered
    assert names == []
    provider.hold.set()
    for thread in (first, *others):
        thread.join(10)
    assert names == [f"oidc:{SUBJECT}"] * 4
    assert provider.jwks_fetches == 1


def test_a_provider_that_drips_its_answer_is_cut_off_at_the_timeout(
    provider: IdentityProvider,
) -> None:
    provider.drip = 0.03  # the discovery document alone would take about 5 s
    verifier = _verifier(provider, jwks_timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(IdentityProviderUnavailable) as raised:
        verifier.verify(provider.token())
    assert "did not arrive in time" in raised.value.message
    assert time.monotonic() - started < 2.5
