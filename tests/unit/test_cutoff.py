"""workers/cutoff.py: a run's connections cut at its deadline or on demand, over real sockets
(the fault-injecting proxy on loopback)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from devtools.fault_proxy import Fault, FaultKind, FaultProxy
from model_proxy.shared.http import new_session
from model_proxy.workers.cutoff import Cutoff, CutReason, cut_with_runs

BODY = b"0123456789" * 100


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    """The proxy under test, in front of another that answers every request with ``BODY``."""
    upstream = FaultProxy("http://127.0.0.1:9")  # never relays: it answers by itself
    upstream.start()
    upstream.set(Fault(FaultKind.BODY, body=BODY, content_type="text/plain"))
    faulty = FaultProxy(upstream.url)
    faulty.start()
    yield faulty
    faulty.stop()
    upstream.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with cut_with_runs(new_session(2)) as prepared:
        yield prepared


def test_a_trickling_answer_is_cut_at_the_deadline_though_no_read_timeout_fires(
    proxy: FaultProxy, session: requests.Session
) -> None:
    proxy.set(Fault(FaultKind.TRICKLE, delay=0.2))
    started = time.monotonic()
    with Cutoff(0.5) as cutoff, pytest.raises(requests.RequestException):
        session.get(proxy.url, timeout=(5, 5))

    assert time.monotonic() - started < 1.5
    assert cutoff.why() is CutReason.DEADLINE


def test_an_answer_framed_by_the_connection_close_is_cut_too(session: requests.Session) -> None:
    """Orthanc ends its WADO-RS answers by closing the connection; http.client then hands the
    socket to the answer, and only the socket remembered at connect can still be shut down."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _CloseFramed)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}")
    proxy.start()
    proxy.set(Fault(FaultKind.TRICKLE, after_bytes=2000, delay=0.2))
    started = time.monotonic()
    try:
        with Cutoff(0.5) as cutoff:
            answer = session.get(proxy.url, timeout=(5, 5), stream=True)
            received = b"".join(answer.iter_content(1024))
    finally:
        proxy.stop()
        upstream.shutdown()

    assert time.monotonic() - started < 1.5
    assert len(received) < 2000 and cutoff.why() is CutReason.DEADLINE


class _CloseFramed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # no Content-Length: the end of the body is the close

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(BODY * 20)

    def log_message(self, *args: object) -> None:
        pass


def test_after_the_cut_a_run_opens_no_new_connection(
    proxy: FaultProxy, session: requests.Session
) -> None:
    with Cutoff(10.0) as cutoff:
        assert session.get(proxy.url, timeout=5).content == BODY
        cutoff.cut(CutReason.HANDED_BACK)
        with pytest.raises(requests.ConnectTimeout):
            session.get(proxy.url, timeout=5)

    assert proxy.hits == 1
    assert cutoff.why() is CutReason.HANDED_BACK


def test_a_cut_from_another_thread_ends_a_call_that_hangs_and_keeps_the_first_reason(
    proxy: FaultProxy, session: requests.Session
) -> None:
    proxy.set(Fault(FaultKind.HANG))
    cutoff = Cutoff(30.0)
    threading.Timer(0.2, cutoff.cut, (CutReason.LEASE_LOST,)).start()
    started = time.monotonic()
    with cutoff, pytest.raises(requests.RequestException):
        session.get(proxy.url, timeout=(5, 20))
    cutoff.cut(CutReason.DEADLINE)

    assert time.monotonic() - started < 2
    assert cutoff.why() is CutReason.LEASE_LOST


def test_calls_outside_a_run_and_runs_that_end_in_time_are_left_alone(
    proxy: FaultProxy, session: requests.Session
) -> None:
    with Cutoff(0.3):
        assert session.get(proxy.url, timeout=5).content == BODY
    time.sleep(0.4)  # past that run's deadline: its timer was cancelled with it

    proxy.set(Fault(FaultKind.SLOW_HEADERS, delay=0.5))
    assert session.get(proxy.url, timeout=5).content == BODY
