"""The fault-injecting proxy of the fault matrix, against a small upstream on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from devtools.fault_proxy import Fault, FaultKind, FaultProxy

BODY = b"0123456789" * 1000


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    faulty = FaultProxy(f"http://127.0.0.1:{server.server_address[1]}")
    faulty.start()
    yield faulty
    faulty.stop()
    server.shutdown()


def test_without_a_fault_it_relays_both_ways(proxy: FaultProxy) -> None:
    assert requests.get(proxy.url, timeout=5).content == BODY
    sent = b"x" * 300_000
    assert requests.post(proxy.url, data=sent, timeout=5).content == sent
    chunks = iter([b"a" * 70_000, b"b" * 10, b"c" * 100_000])
    assert (
        requests.post(proxy.url, data=chunks, timeout=5).content
        == b"a" * 70_000 + b"b" * 10 + b"c" * 100_000
    )
    assert proxy.hits == 3


def test_status_and_body_faults_answer_for_the_upstream(proxy: FaultProxy) -> None:
    with proxy.injecting(Fault(FaultKind.STATUS, status=503)):
        answer = requests.post(proxy.url, data=iter([b"y" * 100_000]), timeout=5)
        assert answer.status_code == 503
    with proxy.injecting(Fault(FaultKind.BODY, body=b"<html>", content_type="text/html")):
        assert requests.get(proxy.url, timeout=5).content == b"<html>"
    with proxy.injecting(Fault(FaultKind.BODY, body=b"[1]", body_size=1_000_000)):
        assert len(requests.get(proxy.url, timeout=5).content) == 1_000_000
    assert requests.get(proxy.url, timeout=5).content == BODY


def test_refuse_closes_the_port_until_cleared(proxy: FaultProxy) -> None:
    with proxy.injecting(Fault(FaultKind.REFUSE)), pytest.raises(requests.ConnectionError):
        requests.get(proxy.url, timeout=5)
    assert requests.get(proxy.url, timeout=5).content == BODY


def test_reset_and_truncate_cut_the_answer(proxy: FaultProxy) -> None:
    broken = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
    with proxy.injecting(Fault(FaultKind.RESET, after_bytes=2000)), pytest.raises(broken) as reset:
        requests.get(proxy.url, timeout=5).content  # noqa: B018
    assert "reset" in str(reset.value).lower()
    with (
        proxy.injecting(Fault(FaultKind.TRUNCATE, after_bytes=2000)),
        pytest.raises(requests.exceptions.ChunkedEncodingError) as cut,
    ):
        requests.get(proxy.url, timeout=5).content  # noqa: B018
    assert "IncompleteRead" in str(cut.value)


def test_slow_headers_hang_and_trickle_keep_the_client_waiting(proxy: FaultProxy) -> None:
    timeout = requests.exceptions.ReadTimeout
    with proxy.injecting(Fault(FaultKind.SLOW_HEADERS, delay=2)), pytest.raises(timeout):
        requests.get(proxy.url, timeout=(1, 0.5))
    with proxy.injecting(Fault(FaultKind.HANG)), pytest.raises(timeout):
        requests.get(proxy.url, timeout=(1, 0.5))
    # every byte trickles, the answer's head included: about 130 bytes, 0.01 s apart
    with proxy.injecting(Fault(FaultKind.TRICKLE, delay=0.01)):
        started = time.monotonic()
        answer = requests.get(proxy.url, timeout=(1, 1), stream=True)
        got = b""
        for piece in answer.iter_content(1):
            got += piece
            if len(got) == 20:
                break
        answer.close()
        assert got == BODY[:20]
        assert time.monotonic() - started >= 1.0


def test_throttle_relays_the_whole_answer_in_pieces_apart(proxy: FaultProxy) -> None:
    # about 10 kB plus its head, 2,000 bytes every 0.05 s: six pieces or more
    with proxy.injecting(Fault(FaultKind.THROTTLE, delay=0.05, after_bytes=2000)):
        started = time.monotonic()
        answer = requests.get(proxy.url, timeout=5)
        took = time.monotonic() - started
    assert answer.content == BODY
    assert took >= 0.25
