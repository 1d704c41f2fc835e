"""A TCP relay on loopback that paces what the server sends to a given rate: a slow link.

``with PacedRelay(upstream_port, 12.5e6) as relay``: connections to ``relay.port`` reach the
upstream port; bytes from the client pass at once, bytes to the client leave at no more than
``rate`` bytes per second (a 100 Mbit/s hospital link is 12.5 MB/s), in slices of a few
milliseconds' worth. One thread per direction of each connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

__all__ = ["PacedRelay"]

_SLICE_SECONDS = 0.002


class PacedRelay:
    def __init__(self, upstream_port: int, rate: float) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> PacedRelay:
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            for source, target, rate in ((client, server, None), (server, client, self._rate)):
                threading.Thread(
                    target=self._pipe, args=(source, target, rate), name="relay", daemon=True
                ).start()

    def _pipe(self, source: socket.socket, target: socket.socket, rate: float | None) -> None:
        piece = 65536 if rate is None else max(int(rate * _SLICE_SECONDS), 1024)
        started, sent = time.perf_counter(), 0
        try:
            while data := source.recv(piece):
                target.sendall(data)
                if rate is None:
                    continue
                sent += len(data)
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -0.05:  # idle meanwhile (between requests): no credit for it
                    started, sent = time.perf_counter(), 0
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
