"""A webhook receiver on loopback for the tests: records each POST (path, headers, body) and
answers each path with the statuses it was told, in turn (then 200)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Received", "WebhookReceiver"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A threaded HTTP server on 127.0.0.1 (a free port), stopped by :meth:`close` (or at the
    end of a ``with`` block)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._statuses: dict[str, list[int]] = defaultdict(list)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answers = receiver._statuses[self.path]
                    status = answers.pop(0) if answers else 200
                self.send_response(status)
                if 300 <= status < 400:  # a redirect a client must not follow
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, path: str, *statuses: int) -> None:
        """Answer the next POSTs to ``path`` with ``statuses``, in turn."""
        with self._lock:
            self._statuses[path] = list(statuses)

    def posts(self, path: str) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Received]:
        """The POSTs to ``path`` once there are ``count`` of them (AssertionError after
        ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.posts(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.posts(path))} POSTs, not {count}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
