"""A webhook receiver on loopback for the tests: records each POST (path, headers, body) and
answers each path with the statuses it was told, in turn (then 200)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "WebhookReceiver", "signed_body"]


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


def signed_body(received: Received, key: bytes) -> dict[str, Any]:
    """The body (JSON) of a POST whose signature passes the Standard Webhooks check, written
    here from the specification, not with the project's signer: base64(HMAC-SHA256(key,
    "{id}.{timestamp}.{body}")) equals a ``v1,`` signature of the header, and the timestamp is
    within five minutes of now."""
    message_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) < 300
    signed = f"{message_id}.{timestamp}.{received.body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = [
        part.split(",", 1)[1]
        for part in received.headers["webhook-signature"].split()
        if part.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, signature) for signature in signatures)
    body: dict[str, Any] = json.loads(received.body)
    return body
