"""The whole benchmark: which sizes, in which order, and what happens when a row fails."""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import rows as r
from bench.compression import COMPRESSION_ROWS, GOALS, compression_rows
from bench.report import Row, failed_row
from bench.stack import ModelKey, Series, Stack
from bench.transport import TRANSPORT, transport_row
from devtools.dicom import ct_series

__all__ = ["FULL", "SMOKE", "Sizes", "run"]


@dataclass(frozen=True)
class Sizes:
    """How big the benchmark runs; the defaults are the full run, :data:`SMOKE` the quick one."""

    rows: int = 512  # of each CT slice
    columns: int = 512
    encode_rounds: int = 7
    series_slices: tuple[int, int, int] = (50, 200, 400)  # small, medium (synchronous), large
    sync_runs: int = 5
    identical_clients: int = 50
    identical_runs: int = 3
    distinct_jobs: int = 32
    model_delay: float = 1.0  # seconds the slow model of the distinct jobs takes
    shared_delay: float = 0.0  # seconds the model of identical requests takes (0: the sink)
    load_seconds: float = 5.0
    load_connections: int = 32


FULL = Sizes()
SMOKE = Sizes(
    rows=64,
    columns=64,
    encode_rounds=2,
    series_slices=(4, 16, 32),
    sync_runs=2,
    identical_runs=1,
    distinct_jobs=16,
    model_delay=0.2,
    shared_delay=0.5,  # a tiny series is done before 50 requests are in: make the job last
    load_seconds=1.0,
    load_connections=8,
)


def _say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _guarded(
    names: tuple[str, ...], goals: tuple[str, ...], measure: Callable[[], list[Row]]
) -> list[Row]:
    """The rows ``measure`` returns, or rows that say why it failed."""
    try:
        return measure()
    except Exception as exc:
        _say(f"{', '.join(names)}: {type(exc).__name__}: {exc}")
        return [failed_row(name, goal, exc) for name, goal in zip(names, goals, strict=True)]


def run(sizes: Sizes) -> list[Row]:
    """Measure every row; a row that cannot be measured is reported as an error."""
    slice_bytes = ct_series(
        study_uid="1.2.3.4", slices=1, rows=sizes.rows, columns=sizes.columns, seed=9
    )[0].data
    _say("encoding")
    encodings = (
        ((r.ENCODING_CT, r.ENCODING_CT_FLOOR), slice_bytes),
        ((r.ENCODING_RANDOM, r.ENCODING_RANDOM_FLOOR), r.random_bytes(len(slice_bytes))),
    )
    rows: list[Row] = []
    for names, data in encodings:
        rows += _guarded(
            names,
            (">= 10x", ">= 1x"),
            functools.partial(r.encoding_rows, names, data, sizes.encode_rounds),
        )
    with tempfile.TemporaryDirectory(prefix="model-proxy-bench-") as tmp:
        stack = Stack(
            Path(tmp),
            sizes.model_delay,
            sizes.series_slices,
            sizes.identical_runs,
            sizes.shared_delay,
            answer_shape=(sizes.series_slices[1], sizes.rows, sizes.columns),
        )
        try:
            _say("starting Orthanc, Redis, the sink and example models and the API")
            stack.start()
            started = time.perf_counter()
            series = [
                stack.load_series(slices, sizes.rows, sizes.columns, seed=index + 1)
                for index, slices in enumerate(sizes.series_slices)
            ]
            _say(
                f"stored series of {', '.join(str(s.slices) for s in series)} slices of "
                f"{sizes.rows}x{sizes.columns} in {time.perf_counter() - started:.1f} s"
            )
            rows += _measure(stack, sizes, series)
        finally:
            stack.stop()
    return rows


def _measure(stack: Stack, sizes: Sizes, series: list[Series]) -> list[Row]:
    small, medium, _ = series
    rows: list[Row] = []
    with stack.workers("inference", [4]):
        _say("checking that the example model decodes what model-proxy sends")
        check = requests.get(stack.series_url(ModelKey.EXAMPLE, small), timeout=300)
        if check.status_code != 200:
            raise RuntimeError(f"the example model's request answered {check.status_code}")

        _say("synchronous inference")
        rows += _guarded(
            (r.SYNC,), ("<= 1.15x",), lambda: [r.sync_row(stack, medium, sizes.sync_runs)]
        )
        _say("multipart transport vs JSON body")
        rows += _guarded(
            (TRANSPORT,), ("<= 0.4x",), lambda: [transport_row(stack, medium, sizes.sync_runs)]
        )
        _say("identical requests at once")
        rows += _guarded(
            (r.IDENTICAL,),
            ("<= 1.3x",),
            lambda: [r.identical_row(stack, medium, sizes.identical_clients, sizes.identical_runs)],
        )
        _say("cached answers under load")
        rows += _guarded(
            (r.CACHED,),
            (">= 0.5x",),
            lambda: [r.cached_row(stack, medium, sizes.load_seconds, sizes.load_connections)],
        )
    _say("compressed answers")
    rows += _guarded(
        COMPRESSION_ROWS, GOALS, lambda: compression_rows(stack, medium, sizes.sync_runs)
    )
    _say("distinct jobs")
    rows += _guarded(
        (r.DISTINCT_8, r.DISTINCT_16),
        ("<= 1.3x", "<= 1.3x"),
        lambda: r.distinct_rows(stack, medium, sizes.distinct_jobs, sizes.model_delay),
    )
    _say("worker peak RSS")
    rows += _guarded(
        (r.RSS_4X, r.RSS_8X), ("<= +64 MB", "<= +64 MB"), lambda: r.rss_rows(stack, series)
    )
    return rows
