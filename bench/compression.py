"""The rows of compressed answers: a 200-slice segmentation answer stored and served gzipped
against the same answer stored and served as plain JSON, each pair measured in one run.

Two worker processes serve two models that answer the same mask document
(:mod:`bench.segmentation`): one with the default ``MODEL_PROXY_ANSWER_GZIP_LEVEL``, one with 0
(compression off).
"""

from __future__ import annotations

import gzip
import statistics
import time
import urllib.parse

import requests

from bench.relay import PacedRelay
from bench.report import Row, at_most
from bench.stack import GZIP_QUEUE, PLAIN_QUEUE, ModelKey, Series, Stack
from model_proxy.shared.jobs import JobKeys

__all__ = ["COMPRESSION_ROWS", "GOALS", "compression_rows"]

WIRE = "answer bytes on the wire, gzip vs identity"
REDIS = "answer in Redis, gzipped vs plain"
LINK = "last byte at 100 Mbit/s, gzip vs identity"
SYNC_GZIP = "synchronous inference, gzip vs off"
COMPRESSION_ROWS = (WIRE, REDIS, LINK, SYNC_GZIP)
GOALS = ("<= 0.05x", "<= 0.05x", "<= 0.2x", "<= 1.05x")

_LINK_RATE = 12.5e6  # bytes per second: 100 Mbit/s
_GZIP = {"Accept-Encoding": "gzip"}
_IDENTITY = {"Accept-Encoding": "identity"}
_NO_CACHE = {"Cache-Control": "no-cache"}


def _fetch(session: requests.Session, url: str, headers: dict[str, str]) -> requests.Response:
    response = session.get(url, headers=headers, timeout=600)
    if response.status_code != 200:
        raise AssertionError(f"GET answered {response.status_code}: {response.text[:200]}")
    return response


def _timed(session: requests.Session, url: str, headers: dict[str, str]) -> tuple[float, str]:
    """Seconds to the last byte (decoded, as a viewer must) and the answer's job id."""
    started = time.perf_counter()
    response = _fetch(session, url, headers)
    return time.perf_counter() - started, response.headers["X-Job-Id"]


def _wire_bytes(url: str, headers: dict[str, str]) -> bytes:
    """The body as sent (not decoded)."""
    with requests.get(url, headers=headers, timeout=600, stream=True) as response:
        return bytes(response.raw.read(decode_content=False))


def compression_rows(stack: Stack, series: Series, runs: int) -> list[Row]:
    gzip_url = stack.series_url(ModelKey.MASK_GZIP, series)
    plain_url = stack.series_url(ModelKey.MASK_PLAIN, series)
    off = {"MODEL_PROXY_ANSWER_GZIP_LEVEL": "0"}
    session = requests.Session()  # Accept-Encoding: gzip, as browsers
    with stack.workers(GZIP_QUEUE, [4]), stack.workers(PLAIN_QUEUE, [4], off):
        _timed(session, gzip_url, _NO_CACHE)  # warm: connections, the sink's document
        _timed(session, plain_url, _NO_CACHE)
        on_times, off_times = [], []
        for _ in range(runs):
            elapsed, gzip_job = _timed(session, gzip_url, _NO_CACHE)
            on_times.append(elapsed)
            elapsed, plain_job = _timed(session, plain_url, _NO_CACHE)
            off_times.append(elapsed)
    shape = "x".join(str(n) for n in stack.answer_shape)
    gzipped, document = _wire_bytes(gzip_url, _GZIP), _wire_bytes(gzip_url, _IDENTITY)
    if gzip.decompress(gzipped) != document:
        raise AssertionError("the gzip and identity answers differ")
    keys, client = JobKeys(), stack.redis.client()
    try:
        memory_gzip = int(client.memory_usage(keys.result(gzip_job)) or 0)
        memory_plain = int(client.memory_usage(keys.result(plain_job)) or 0)
    finally:
        client.close()
    port = urllib.parse.urlsplit(stack.api_url).port
    assert port is not None
    with PacedRelay(port, _LINK_RATE) as relay:
        slow_url = gzip_url.replace(f":{port}/", f":{relay.port}/", 1)
        slow = requests.Session()
        _timed(slow, slow_url, _GZIP)  # warm: the connection
        link_gzip = statistics.median(_timed(slow, slow_url, _GZIP)[0] for _ in range(runs))
        link_plain = statistics.median(_timed(slow, slow_url, _IDENTITY)[0] for _ in range(2))
    mb = len(document) / 1e6
    return [
        at_most(WIRE, len(gzipped) / 1e6, mb, "MB", 0.05, f"a {shape} mask"),
        at_most(REDIS, memory_gzip / 1e6, memory_plain / 1e6, "MB", 0.05, "MEMORY USAGE"),
        at_most(
            LINK,
            link_gzip,
            link_plain,
            "s",
            0.2,
            "a relay pacing to 12.5 MB/s on loopback; the stored answer, decoded by the client",
        ),
        at_most(
            SYNC_GZIP,
            statistics.median(on_times),
            statistics.median(off_times),
            "s",
            1.05,
            f"{series.slices} slices in, a {shape} mask out, fresh runs, median of {runs}, "
            "alternating; a worker at MODEL_PROXY_ANSWER_GZIP_LEVEL=1 vs one at 0",
        ),
    ]
