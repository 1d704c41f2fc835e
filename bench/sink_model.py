"""A model API that only reads: it reads each request body to its end and answers ``{}``.

``python -m bench.sink_model --port P``. ``POST /infer?tag=T&delay=S`` reads the body (chunked
or with a Content-Length), sleeps ``S`` seconds, answers ``{}`` and counts the call under ``T``;
``GET /calls`` answers the counts and the bytes read per tag, ``POST /reset`` clears them. It
costs as little as a model can, so that the benchmark measures model-proxy, not the model.
With ``answer=mask&slices=N&rows=R&columns=C`` it answers a realistic segmentation document of
that size instead (:mod:`bench.segmentation`, made once and kept).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from bench.segmentation import segmentation_answer

__all__ = ["main"]

_READ = 1 << 20


def _answer_for(query: dict[str, list[str]]) -> bytes:
    if query.get("answer", [""])[0] != "mask":
        return b"{}"
    slices, rows, columns = (int(query[name][0]) for name in ("slices", "rows", "columns"))
    return segmentation_answer(slices, rows, columns)


class _Counts:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, tag: str, nbytes: int) -> None:
        with self.lock:
            self.calls[tag] += 1
            self.bytes[tag] += nbytes

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {"calls": dict(self.calls), "bytes": dict(self.bytes)}

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()
            self.bytes.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    counts = _Counts()

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/reset":
            self.counts.reset()
            self._answer(b"{}")
            return
        query = parse_qs(url.query)
        nbytes = self._read_body()
        delay = float(query.get("delay", ["0"])[0])
        if delay > 0:
            time.sleep(delay)
        self.counts.add(query.get("tag", [""])[0], nbytes)
        self._answer(_answer_for(query))

    def do_GET(self) -> None:
        if urlsplit(self.path).path == "/calls":
            self._answer(json.dumps(self.counts.snapshot()).encode())
        else:
            self._answer(b'{"status":"ok"}')

    def _read_body(self) -> int:
        """Read and drop the body into one reused buffer; return its length."""
        scratch = memoryview(bytearray(_READ))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return total
                self._drop(size, scratch)
                self.rfile.readline()  # the CRLF after the chunk
                total += size
        length = int(self.headers.get("Content-Length", "0"))
        self._drop(length, scratch)
        return length

    def _drop(self, size: int, scratch: memoryview) -> None:
        while size > 0:
            got = self.rfile.readinto(scratch[: min(size, _READ)])
            if not got:
                raise ConnectionError("the body ended early")
            size -= got

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per call would cost more than the call


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sink_model", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _Server((args.host, args.port), _Handler).serve_forever()


if __name__ == "__main__":
    main()
