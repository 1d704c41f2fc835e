"""Each benchmark row: what it measures, its baseline from the same run, and its goal."""

from __future__ import annotations

import functools
import json
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import requests

from bench.compression import COMPRESSION_ROWS
from bench.floor import SyncFloor, numpy_encode
from bench.load import measure_rps
from bench.report import Row, at_least, at_most, growth_at_most
from bench.stack import DELAY_QUEUE, ModelKey, Series, Stack, rss_queue
from bench.together import at_once
from model_proxy.shared.encoding import encode_byte_array

__all__ = [
    "ROW_NAMES",
    "cached_row",
    "distinct_rows",
    "encoding_rows",
    "identical_row",
    "rss_rows",
    "sync_row",
]

ENCODING_CT = "encoding, CT slice vs json.dumps"
ENCODING_CT_FLOOR = "encoding, CT slice vs numpy floor"
ENCODING_RANDOM = "encoding, random bytes vs json.dumps"
ENCODING_RANDOM_FLOOR = "encoding, random bytes vs numpy floor"
SYNC = "synchronous inference vs floor"
CACHED = "cached answer vs /healthz"
IDENTICAL = "identical requests at once vs one"
DISTINCT_8 = "distinct slow jobs, concurrency 8, vs ideal"
DISTINCT_16 = "distinct slow jobs, concurrency 16, vs ideal"
RSS_4X = "worker peak RSS, 4x the slices"
RSS_8X = "worker peak RSS, 8x the slices"
ROW_NAMES = (
    *COMPRESSION_ROWS,
    ENCODING_CT,
    ENCODING_CT_FLOOR,
    ENCODING_RANDOM,
    ENCODING_RANDOM_FLOOR,
    SYNC,
    IDENTICAL,
    CACHED,
    DISTINCT_8,
    DISTINCT_16,
    RSS_4X,
    RSS_8X,
)
NO_CACHE = {"Cache-Control": "no-cache"}


def _reference(data: bytes) -> bytes:
    return json.dumps(list(data), separators=(",", ":")).encode()


def _seconds_each(encode: Callable[[bytes], bytes], data: bytes, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        encode(data)
    return (time.perf_counter() - started) / repeat


def encoding_rows(names: tuple[str, str], data: bytes, rounds: int) -> list[Row]:
    """``encode_byte_array`` against ``json.dumps(list(data))`` and against the plain numpy
    encoder of :mod:`bench.floor`, the three timed in alternation on the same bytes."""
    for encode in (encode_byte_array, numpy_encode):
        if encode(data) != _reference(data):
            raise AssertionError(f"{encode.__name__} differs from json.dumps")
    ours: list[float] = []
    floor: list[float] = []
    reference: list[float] = []
    for _ in range(rounds):
        reference.append(_seconds_each(_reference, data, 1))
        floor.append(_seconds_each(numpy_encode, data, 3))
        ours.append(_seconds_each(encode_byte_array, data, 10))
    mb = len(data) / 1e6
    speed = mb / statistics.median(ours)
    note = f"{len(data):,} bytes, median of {rounds} rounds"
    return [
        at_least(names[0], speed, mb / statistics.median(reference), "MB/s", 10, note),
        at_least(
            names[1],
            speed,
            mb / statistics.median(floor),
            "MB/s",
            1,
            f"{note}; the floor looks up each byte's text in a table and keeps its characters",
        ),
    ]


def random_bytes(size: int) -> bytes:
    return random.Random(20261128).randbytes(size)


def _timed_get(session: requests.Session, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = session.get(url, headers=headers, timeout=300)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise AssertionError(f"GET answered {response.status_code}: {response.text[:200]}")
    return elapsed


def _get(session: requests.Session, _: int, url: str) -> requests.Response:
    return session.get(url, timeout=300)


def sync_row(stack: Stack, series: Series, runs: int) -> Row:
    """One fresh series request through API, Redis and a worker, against the floor."""
    orthanc = stack.orthanc
    floor = SyncFloor(
        orthanc.dicomweb,
        (orthanc.user, orthanc.password),
        series.study_uid,
        series.series_uid,
        f"{stack.sink_url}/infer?tag=floor",
    )
    session = requests.Session()
    url = stack.series_url(ModelKey.SINK, series)
    floor()  # warm both paths: connections, Orthanc's cache, the worker's first job
    _timed_get(session, url, NO_CACHE)
    floors, systems = [], []
    for _ in range(runs):
        floors.append(floor())
        systems.append(_timed_get(session, url, NO_CACHE))
    sent, floor_sent = stack.sink_bytes_per_call("sync"), stack.sink_bytes_per_call("floor")
    if sent != floor_sent:
        raise AssertionError(f"the floor sent {floor_sent:,.0f} bytes, model-proxy {sent:,.0f}")
    measured, baseline = statistics.median(systems), statistics.median(floors)
    note = (
        f"{series.slices} slices ({sent / 1e6:,.1f} MB of JSON each), median of {runs} runs "
        "each, alternating; the floor: a plain script (bench/floor.py)"
    )
    return at_most(SYNC, measured, baseline, "s", 1.15, note)


def cached_row(stack: Stack, series: Series, seconds: float, connections: int) -> Row:
    """Requests per second of a stored answer against ``GET /healthz`` of the same API."""
    url = stack.series_url(ModelKey.SINK, series)
    first = requests.get(url, timeout=300)
    again = requests.get(url, timeout=300)
    if first.status_code != 200 or again.headers.get("X-Job-Id") != first.headers.get("X-Job-Id"):
        raise AssertionError("the answer is not served from the stored result")
    healthz, cached = [], []
    for _ in range(2):
        healthz.append(measure_rps(f"{stack.api_url}/healthz", seconds, connections))
        cached.append(measure_rps(url, seconds, connections))
    errors = sum(load.errors for load in [*healthz, *cached])
    if errors:
        raise AssertionError(f"{errors} requests failed under load")
    measured = max(load.rps for load in cached)
    baseline = max(load.rps for load in healthz)
    note = (
        f"{cached[0].tool}, {connections} connections, best of 2 x {seconds:g} s each, "
        f"{series.slices}-slice series"
    )
    return at_least(CACHED, measured, baseline, "req/s", 0.5, note)


def _at_once(
    count: int, request: Callable[[requests.Session, int], requests.Response]
) -> tuple[float, list[requests.Response]]:
    """``count`` requests sent together, each from its own thread and connection."""
    sessions = [requests.Session() for _ in range(count)]
    answers: list[requests.Response | BaseException | None] = [None] * count

    def client(index: int) -> None:
        try:
            answers[index] = request(sessions[index], index)
        except BaseException as exc:
            answers[index] = exc

    elapsed = at_once(count, client)
    responses: list[requests.Response] = []
    for answer in answers:
        if not isinstance(answer, requests.Response):
            raise AssertionError(f"a request failed: {answer!r}")
        if answer.status_code != 200:
            raise AssertionError(f"a request answered {answer.status_code}: {answer.text[:200]}")
        responses.append(answer)
    return elapsed, responses


def identical_row(stack: Stack, series: Series, clients: int, runs: int) -> Row:
    """``clients`` identical requests at once against one request: one job, one model call.

    Each run asks a model never asked before, so that no stored answer exists and the plain
    GETs (as viewers send them) must share one fresh job. The baseline is one fresh request of
    a model configured alike.
    """
    session = requests.Session()
    one_url = stack.series_url(ModelKey.SHARED_ONE, series)
    _timed_get(session, one_url, NO_CACHE)  # warm
    singles, times, counts = [], [], []
    for run in range(runs):
        singles.append(_timed_get(session, one_url, NO_CACHE))
        model = ModelKey.shared(run)
        url = stack.series_url(model, series)
        elapsed, responses = _at_once(clients, functools.partial(_get, url=url))
        times.append(elapsed)
        job_ids = {response.headers.get("X-Job-Id") for response in responses}
        deadline = time.monotonic() + 5  # the worker counts the job just after answering
        while stack.job_count(model) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts.append((len(job_ids), stack.job_count(model), stack.sink_calls(f"shared-{run}")))
    shared = all(count == (1, 1, 1) for count in counts)
    runs_text = ", ".join(f"{ids}/{jobs}/{calls}" for ids, jobs, calls in counts)
    note = (
        f"{clients} clients, {series.slices} slices, median of {runs}; job ids/jobs/model "
        f"calls per run: {runs_text} (goal: 1/1/1)"
    )
    row = at_most(IDENTICAL, statistics.median(times), statistics.median(singles), "s", 1.3, note)
    return replace(row, passed=bool(row.passed) and shared)


def distinct_rows(stack: Stack, series: Series, jobs: int, delay: float) -> list[Row]:
    """``jobs`` different instance jobs on a model taking ``delay`` s, at 8 then 16 at once."""
    if series.slices < jobs:
        raise ValueError(f"{jobs} distinct jobs need a series of at least {jobs} slices")
    rows = []

    def run(name: str, concurrency: int) -> Row:
        def ask(session: requests.Session, index: int) -> requests.Response:
            url = stack.instance_url(ModelKey.DELAY, series, index)
            return session.get(url, headers=NO_CACHE, timeout=300)

        elapsed, _ = _at_once(jobs, ask)
        ideal = math.ceil(jobs / concurrency) * delay
        note = f"{jobs} jobs of one instance, model {delay:g} s, workers {concurrency // 4} x 4"
        return at_most(name, elapsed, ideal, "s", 1.3, note)

    with stack.workers(DELAY_QUEUE, [4, 4]):
        rows.append(run(DISTINCT_8, 8))
        with stack.workers(DELAY_QUEUE, [4, 4]):
            rows.append(run(DISTINCT_16, 16))
    return rows


def _peak_rss_mb(pid: int) -> float:
    """VmHWM, the process's peak resident set, in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def rss_rows(stack: Stack, series_by_size: list[Series]) -> list[Row]:
    """The peak RSS of a fresh worker after one job, per series size."""
    peaks = []
    idle = []
    session = requests.Session()
    for series in series_by_size:
        with stack.workers(rss_queue(series.slices), [4]) as (worker,):
            idle.append(_peak_rss_mb(worker.process.pid))
            _timed_get(session, stack.series_url(ModelKey.rss(series.slices), series), NO_CACHE)
            peaks.append(_peak_rss_mb(worker.process.pid))
    small, *larger = series_by_size
    rows = []
    for name, series, peak in zip((RSS_4X, RSS_8X), larger, peaks[1:], strict=True):
        note = (
            f"{series.slices} vs {small.slices} slices; a fresh worker per size, "
            f"{idle[0]:.0f} MB at rest"
        )
        rows.append(growth_at_most(name, peak, peaks[0], "MB", 64, note))
    return rows
