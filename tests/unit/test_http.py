"""Translating ``requests``' exceptions into ours, by type: one function for every peer."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import urllib3.exceptions

from model_proxy.shared.errors import (
    ModelProxyError,
    PacsFailed,
    PacsTimeout,
    PacsUnreachable,
)
from model_proxy.shared.http import (
    Peer,
    is_timeout,
    pieces_as_they_arrive,
    translate_request_error,
    translated_errors,
)

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


class SlowServer:
    """A server that answers one request with a body without a length: ``abc`` at once, then,
    when ``go_on`` is set (or after 5 s), ``def`` and the end; or, with ``reset``, a reset."""

    def __init__(self) -> None:
        self.go_on = threading.Event()
        self.reset = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        client, _ = self._listener.accept()
        with client:
            client.recv(65536)
            client.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
            self.go_on.wait(5)
            if self.reset:  # linger 0: close with a reset
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            client.sendall(b"def")

    def close(self) -> None:
        self.go_on.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    server = SlowServer()
    yield server
    server.close()


def test_a_streamed_body_is_read_as_it_arrives_not_a_megabyte_at_a_time(
    slow_server: SlowServer,
) -> None:
    with requests.get(slow_server.url, stream=True, timeout=5) as response:
        pieces = pieces_as_they_arrive(response, 1 << 20)
        started = time.monotonic()
        assert next(pieces) == b"abc"
        assert time.monotonic() - started < 2  # not waiting for the rest
        slow_server.go_on.set()
        assert b"".join(pieces) == b"def"


def test_a_body_cut_off_is_a_requests_error_as_iter_content_raises(
    slow_server: SlowServer,
) -> None:
    slow_server.reset = True
    with requests.get(slow_server.url, stream=True, timeout=5) as response:
        pieces = pieces_as_they_arrive(response, 1 << 20)
        assert next(pieces) == b"abc"
        slow_server.go_on.set()
        with pytest.raises(requests.exceptions.RequestException):
            list(pieces)
