"""The pure parts of webhooks: the Standard Webhooks signature, the allowlist of callback
origins, the backoff schedule, and the settings that refuse to start without a good secret."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr, ValidationError

from model_proxy.cli import main
from model_proxy.shared.errors import CallbackNotAllowed
from model_proxy.shared.settings import Settings, get_settings
from model_proxy.shared.webhooks import (
    check_callback_url,
    next_delay,
    parse_origins,
    public_url,
    signing_key,
    webhook_headers,
    webhook_signature,
)

# the test vector of the Standard Webhooks specification (standard-webhooks/standard-webhooks)
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

GOOD_SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()


def test_the_signature_is_the_specifications_test_vector() -> None:
    key = signing_key(SecretStr(SPEC_SECRET))

    assert webhook_signature(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_headers_carry_id_timestamp_and_signature() -> None:
    key = signing_key(SecretStr(SPEC_SECRET))

    headers = webhook_headers(key, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)

    assert headers["webhook-id"] == SPEC_ID
    assert headers["webhook-timestamp"] == str(SPEC_TIMESTAMP)
    assert headers["webhook-signature"] == SPEC_SIGNATURE
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "secret",
    ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not base64!", "whsec_" + "QQ==", "whsec_"],
)
def test_a_malformed_secret_is_refused_naming_the_setting_not_the_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="MODEL_PROXY_WEBHOOK_SECRET"):
        signing_key(SecretStr(secret))


ORIGINS = parse_origins(["https://hooks.example.org", "http://127.0.0.1:8080"])


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org/done?job=1",
        "https://HOOKS.example.org:443/x",
        "http://127.0.0.1:8080/hook",
    ],
)
def test_a_url_of_an_allowed_origin_passes(url: str) -> None:
    assert check_callback_url(url, ORIGINS) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://evil.example.org/x", "not one of MODEL_PROXY_CALLBACK_ORIGINS"),
        ("http://hooks.example.org/x", "not one of"),  # another scheme, so another origin
        ("https://hooks.example.org:8443/x", "not one of"),  # another port
        ("http://127.0.0.1/x", "not one of"),  # the default port is not 8080
        ("https://user:pw@hooks.example.org/x", "no user name or password"),
        ("https://hooks.example.org@evil.example.org/x", "no user name or password"),
        ("ftp://hooks.example.org/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("https://hooks.example.org/" + "a" * 2048, "at most 2048"),
        ("https://hooks.example.org:99999/x", "not one of"),
        ("https://hooks.exa\nmple.org/x", "no spaces or control characters"),
        ("https://hooks.example.org/a\tb", "no spaces or control characters"),
        ("https://hooks.example.org/a\r\nX-Injected: 1", "no spaces or control characters"),
        ("https://hooks.example.org/a b", "no spaces or control characters"),
        ("https://hooks.example.org/\x7f", "no spaces or control characters"),
    ],
)
def test_anything_else_is_refused(url: str, why: str) -> None:
    with pytest.raises(CallbackNotAllowed, match=why):
        check_callback_url(url, ORIGINS)


def test_with_no_origins_callbacks_are_refused_naming_the_setting() -> None:
    with pytest.raises(CallbackNotAllowed, match="MODEL_PROXY_CALLBACK_ORIGINS is empty"):
        check_callback_url("https://hooks.example.org/x", frozenset())


@pytest.mark.parametrize(
    "origin", ["ftp://a.example", "https://a.example/path", "https://u@a.example", "a.example"]
)
def test_an_origin_setting_that_is_not_an_origin_stops_the_start(origin: str) -> None:
    with pytest.raises(ValidationError, match="MODEL_PROXY_CALLBACK_ORIGINS"):
        Settings(callback_origins=origin, webhook_secret=GOOD_SECRET)


def test_a_secret_shorter_than_the_specifications_24_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="24 to 64 random bytes"):
        signing_key(SecretStr("whsec_" + base64.b64encode(b"k" * 16).decode()))
    assert signing_key(SecretStr(GOOD_SECRET)) == b"k" * 24


def test_callbacks_allowed_without_a_secret_stop_the_start() -> None:
    with pytest.raises(ValidationError, match="MODEL_PROXY_WEBHOOK_SECRET is not set"):
        Settings(callback_origins="https://a.example")


def test_a_malformed_secret_stops_the_start_without_showing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(webhook_secret="whsec_topsecret!!")
    assert "MODEL_PROXY_WEBHOOK_SECRET" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_the_setting_is_read_as_a_comma_separated_list() -> None:
    settings = Settings(
        callback_origins="https://a.example, http://127.0.0.1:9", webhook_secret=GOOD_SECRET
    )

    assert settings.callback_origins == ["https://a.example", "http://127.0.0.1:9"]


def test_others_see_only_a_callbacks_origin() -> None:
    assert public_url("https://a.example/hook/s3cr3t?token=abc#x") == "https://a.example"
    assert public_url("http://127.0.0.1:8080/h/k") == "http://127.0.0.1:8080"


def test_the_backoff_doubles_from_one_second_up_to_its_cap() -> None:
    delays = [next_delay(attempt, 0.0, 10_000.0, 30.0) for attempt in range(1, 9)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_the_backoff_gives_up_when_the_next_try_would_start_past_the_total_time() -> None:
    assert next_delay(3, elapsed=5.0, total=9.0, longest=60.0) == 4.0
    assert next_delay(3, elapsed=5.5, total=9.0, longest=60.0) is None


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"MODEL_PROXY_WEBHOOK_SECRET": "whsec_topsecret!!"}, "MODEL_PROXY_WEBHOOK_SECRET"),
        ({"MODEL_PROXY_CALLBACK_ORIGINS": "https://a.example"}, "MODEL_PROXY_WEBHOOK_SECRET"),
        ({"MODEL_PROXY_CALLBACK_ORIGINS": "https://a.example/x"}, "MODEL_PROXY_CALLBACK_ORIGINS"),
    ],
)
def test_serve_and_the_worker_refuse_to_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    environ: dict[str, str],
    named: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        code = main([command])
    finally:
        get_settings.cache_clear()

    error = capsys.readouterr().err
    assert code == 2
    assert named in error
    assert "topsecret" not in error
