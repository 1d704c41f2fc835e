"""A fault-injecting HTTP proxy on loopback, for testing how model-proxy meets a failing PACS,
model or token server.

It sits in front of one upstream (``http://host:port``) and relays each request, one per
connection (it asks both sides for ``Connection: close``), unless a :class:`Fault` is set: then
it refuses connections, answers with a status of its own, never answers, delays the answer's
first byte, trickles it, slows it to a rate, resets the connection or ends it cleanly part-way
through the answer, or answers 200 with a body of its own (not JSON, or very large). Faults are
set and cleared at any time from the test; ``hits`` counts the requests it has seen.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit

__all__ = ["Fault", "FaultKind", "FaultProxy"]

_CHUNK = 64 * 1024
_HEAD_LIMIT = 64 * 1024


class FaultKind(StrEnum):
    REFUSE = "refuse"  # nothing listens: connections are refused
    STATUS = "status"  # answer ``status`` with a small JSON body
    HANG = "hang"  # read the request, never answer (until the proxy stops)
    SLOW_HEADERS = "slow-headers"  # relay, but only after ``delay`` seconds
    TRICKLE = "trickle"  # relay ``after_bytes`` at once, then a byte every ``delay`` seconds
    THROTTLE = "throttle"  # relay in pieces of ``after_bytes`` bytes, ``delay`` seconds apart
    RESET = "reset"  # relay ``after_bytes`` of the answer, then reset the connection
    TRUNCATE = "truncate"  # relay ``after_bytes`` of the answer, then close cleanly
    BODY = "body"  # answer 200 with ``body`` (or ``body_size`` bytes of it, repeated)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 500
    delay: float = 0.0
    after_bytes: int = 0
    body: bytes = b'{"message": "injected fault"}'
    body_size: int | None = None
    content_type: str = "application/json"


@dataclass
class _State:
    fault: Fault | None = None
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultProxy:
    """A proxy for ``upstream``; ``start()`` returns its own base URL."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._upstream_path = parts.path.rstrip("/")
        self._state = _State()
        self._listener: socket.socket | None = None
        self._port = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self._upstream_path}"

    @property
    def hits(self) -> int:
        return self._state.hits

    def start(self) -> str:
        self._listen()
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        for thread in self._threads:
            thread.join(timeout=5)

    def set(self, fault: Fault | None) -> None:
        """Inject ``fault`` from now on (``None`` relays again)."""
        with self._state.lock:
            self._state.fault = fault
        if fault is not None and fault.kind is FaultKind.REFUSE:
            self._close_listener()
        elif self._listener is None and not self._stopping.is_set():
            self._listen()

    def clear(self) -> None:
        self.set(None)

    @contextlib.contextmanager
    def injecting(self, fault: Fault) -> Iterator[FaultProxy]:
        self.set(fault)
        try:
            yield self
        finally:
            self.clear()

    # -- listening ---------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(64)
        self._port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    # -- one request -------------------------------------------------------------------------

    def _serve(self, client: socket.socket) -> None:
        with client:
            try:
                head, rest = _read_head(client)
            except (OSError, ValueError):
                return
            with self._state.lock:
                self._state.hits += 1
                fault = self._state.fault
            try:
                if fault is None or fault.kind in _RELAYED:
                    self._relay(client, head, rest, fault)
                else:
                    _drain_body(client, head, rest)
                    self._answer(client, fault)
            except OSError:
                return

    def _answer(self, client: socket.socket, fault: Fault) -> None:
        if fault.kind is FaultKind.HANG:
            self._stopping.wait()
            return
        if fault.kind is FaultKind.STATUS:
            _send_response(client, fault.status, fault.content_type, [fault.body], len(fault.body))
            return
        size = fault.body_size if fault.body_size is not None else len(fault.body)
        _send_response(client, 200, fault.content_type, _repeat(fault.body, size), size)

    def _relay(self, client: socket.socket, head: bytes, rest: bytes, fault: Fault | None) -> None:
        with socket.create_connection(self._upstream, timeout=60) as upstream:
            upstream.sendall(_closing(head))
            _copy_body(client, upstream, head, rest)
            slow = fault is not None and fault.kind is FaultKind.SLOW_HEADERS
            if slow and fault is not None and self._stopping.wait(fault.delay):
                return
            sent = 0
            first = _response_head(upstream)  # told to close, so the client never reuses it
            while True:
                data, first = (first, b"") if first else (upstream.recv(_CHUNK), b"")
                if not data:
                    return
                if fault is None or fault.kind is FaultKind.SLOW_HEADERS:
                    client.sendall(data)
                    continue
                if fault.kind is FaultKind.THROTTLE:
                    if self._throttled(client, data, fault):
                        return
                    continue
                room = fault.after_bytes - sent
                if room > 0:
                    client.sendall(data[:room])
                    sent += min(room, len(data))
                    data = data[room:]
                if not data:
                    continue
                if fault.kind is FaultKind.RESET:
                    _reset(client)
                    return
                if fault.kind is FaultKind.TRUNCATE:
                    client.shutdown(socket.SHUT_WR)
                    return
                for byte in data:  # TRICKLE
                    if self._stopping.wait(fault.delay):
                        return
                    client.sendall(bytes([byte]))

    def _throttled(self, client: socket.socket, data: bytes, fault: Fault) -> bool:
        """Send ``data`` in pieces of ``fault.after_bytes``, each after ``fault.delay``
        seconds; True when the proxy is stopping."""
        piece = max(fault.after_bytes, 1)
        for start in range(0, len(data), piece):
            if self._stopping.wait(fault.delay):
                return True
            client.sendall(data[start : start + piece])
        return False


_RELAYED = frozenset(
    {
        FaultKind.SLOW_HEADERS,
        FaultKind.TRICKLE,
        FaultKind.THROTTLE,
        FaultKind.RESET,
        FaultKind.TRUNCATE,
    }
)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The request line and headers (up to the blank line), and what came after them."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(_CHUNK)
        if not data:
            raise ValueError("connection closed before the request head")
        buffer += data
        if len(buffer) > _HEAD_LIMIT and b"\r\n\r\n" not in buffer:
            raise ValueError("request head too large")
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _response_head(upstream: socket.socket) -> bytes:
    """The upstream answer's head with ``Connection: close`` and what came after it (all of
    what was read when the answer ends before its head does)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = upstream.recv(_CHUNK)
        if not data:
            return buffer
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return _closing(head + b"\r\n\r\n") + rest


def _closing(head: bytes) -> bytes:
    """The head with ``Connection: close``, so each connection carries one request."""
    lines = [
        line
        for line in head.rstrip(b"\r\n").split(b"\r\n")
        if line.partition(b":")[0].strip().lower() not in (b"connection", b"keep-alive")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _body_pieces(client: socket.socket, head: bytes, rest: bytes) -> Iterator[bytes]:
    """The raw bytes of the request body, framing included, as they arrive."""
    length = _header(head, b"content-length")
    if length is not None:
        remaining = int(length)
        if rest:
            yield rest[:remaining]
            remaining -= len(rest[:remaining])
        while remaining > 0:
            data = client.recv(min(_CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data
        return
    if (_header(head, b"transfer-encoding") or b"").lower() != b"chunked":
        return
    buffer = rest
    while True:  # chunked: relay until the zero-size chunk and its closing blank line
        while b"\r\n" not in buffer:
            buffer += _recv(client)
        size_line, _, after = buffer.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while b"\r\n\r\n" not in b"\r\n" + after:
                after += _recv(client)
            end = (b"\r\n" + after).index(b"\r\n\r\n") + 2
            yield size_line + b"\r\n" + after[:end]
            return
        needed = size + 2  # the data and its CRLF
        yield size_line + b"\r\n"
        while len(after) < needed:
            if len(after) > _CHUNK:
                yield after
                needed -= len(after)
                after = b""
            after += _recv(client)
        yield after[:needed]
        buffer = after[needed:]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(_CHUNK)
    if not data:
        raise OSError("connection closed in the request body")
    return data


def _copy_body(client: socket.socket, upstream: socket.socket, head: bytes, rest: bytes) -> None:
    for piece in _body_pieces(client, head, rest):
        upstream.sendall(piece)


def _drain_body(client: socket.socket, head: bytes, rest: bytes) -> None:
    for _ in _body_pieces(client, head, rest):
        pass


def _repeat(pattern: bytes, size: int) -> Iterator[bytes]:
    block = (pattern * (_CHUNK // max(len(pattern), 1) + 1))[:_CHUNK]
    left = size
    while left > 0:
        yield block[:left]
        left -= min(left, len(block))


def _send_response(
    client: socket.socket,
    status: int,
    content_type: str,
    body: Iterator[bytes] | list[bytes],
    length: int,
) -> None:
    client.sendall(
        f"HTTP/1.1 {status} Injected\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode()
    )
    for piece in body:
        client.sendall(piece)
    time.sleep(0.05)  # let the client read before the close


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset instead of a clean end."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
