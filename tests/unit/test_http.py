"""Translating ``requests``' exceptions into ours, by type: one function for every peer."""

from __future__ import annotations

import pytest
import requests
import urllib3.exceptions

from model_proxy.shared.errors import (
    ModelProxyError,
    PacsFailed,
    PacsTimeout,
    PacsUnreachable,
)
from model_proxy.shared.http import Peer, is_timeout, translate_request_error, translated_errors

PEER = Peer(
    "server s1",
    timeout=PacsTimeout,
    unreachable=PacsUnreachable,
    failed=PacsFailed,
    failed_text="the transfer failed",
    tls="ADVICE",
)


def _refused() -> requests.exceptions.ConnectionError:
    new = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    new.__cause__ = ConnectionRefusedError()
    return requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", new))  # type: ignore[arg-type]


def _read_timeout_while_streaming() -> requests.exceptions.ConnectionError:
    # what Response.iter_content raises when the read timeout strikes mid-body
    read = urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(read)


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (requests.exceptions.ReadTimeout(), PacsTimeout, "server s1 did not answer in time"),
        (requests.exceptions.ConnectTimeout(), PacsTimeout, "server s1 did not answer in time"),
        (TimeoutError(), PacsTimeout, "server s1 did not answer in time"),
        (_read_timeout_while_streaming(), PacsTimeout, "server s1 did not answer in time"),
        (_refused(), PacsUnreachable, "server s1 cannot be reached"),
        (requests.exceptions.SSLError(), PacsUnreachable, "ADVICE"),
        (requests.exceptions.InvalidURL(), PacsFailed, "server s1: the transfer failed"),
        (requests.exceptions.ChunkedEncodingError(), PacsFailed, "server s1: the transfer failed"),
    ],
)
def test_each_failure_becomes_our_error_by_its_type(
    error: BaseException, kind: type[ModelProxyError], message: str
) -> None:
    translated = translate_request_error(error, PEER)
    assert type(translated) is kind
    assert translated.message == message


def test_a_message_that_says_timed_out_is_not_a_timeout() -> None:
    error = requests.exceptions.ConnectionError("the peer said: timed out")
    assert not is_timeout(error)
    assert isinstance(translate_request_error(error, PEER), PacsUnreachable)


def test_without_tls_advice_or_failed_wording_everything_else_is_unreachable() -> None:
    plain = Peer("model m", timeout=PacsTimeout, unreachable=PacsUnreachable, failed=PacsFailed)
    assert translate_request_error(requests.exceptions.SSLError(), plain).message == (
        "model m cannot be reached"
    )
    assert translate_request_error(requests.exceptions.InvalidURL(), plain).message == (
        "model m cannot be reached"
    )


def test_the_block_raises_ours_without_the_foreign_cause() -> None:
    with pytest.raises(PacsTimeout) as caught, translated_errors(PEER):
        raise requests.exceptions.ReadTimeout("http://user:secret@pacs/")
    assert caught.value.__cause__ is None
    assert "secret" not in str(caught.value)
