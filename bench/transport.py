"""The multipart transport against the zhiva JSON body, end to end, the model's decoding included.

Two models.json entries point at the example model's ``/prediction`` (a small answer, so the row
measures the way in, not the answer's way back), one with the JSON body and one with
``"transport": "multipart"``. Each fresh request goes through the API, Redis and a worker, which
fetches the series from Orthanc and streams it to the model; the model decodes what it receives
(the JSON arrays back to bytes, or the multipart parts) and reads every file with pydicom.
"""

from __future__ import annotations

import statistics
import time

import requests

from bench.report import Row, at_most
from bench.stack import ModelKey, Series, Stack

__all__ = ["TRANSPORT", "transport_row"]

TRANSPORT = "multipart body vs JSON body, end to end"
_NO_CACHE = {"Cache-Control": "no-cache"}


def _timed(session: requests.Session, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = session.get(url, headers=_NO_CACHE, timeout=300)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise AssertionError(f"GET answered {response.status_code}: {response.text[:200]}")
    return elapsed, response.content


def transport_row(stack: Stack, series: Series, runs: int) -> Row:
    """Fresh series requests of the two example models, alternating; medians compared. Both
    answers must be the same document."""
    session = requests.Session()
    as_json = stack.series_url(ModelKey.EXAMPLE_JSON, series, "predictions")
    as_files = stack.series_url(ModelKey.EXAMPLE_MULTIPART, series, "predictions")
    _, json_answer = _timed(session, as_json)  # warm both paths
    _, files_answer = _timed(session, as_files)
    if json_answer != files_answer:
        raise AssertionError("the example model answered differently to the two transports")
    json_times, files_times = [], []
    for _ in range(runs):
        json_times.append(_timed(session, as_json)[0])
        files_times.append(_timed(session, as_files)[0])
    note = (
        f"{series.slices} slices, the example model's prediction (every file decoded and read "
        f"with pydicom), median of {runs} runs each, alternating; the same answer both ways"
    )
    return at_most(
        TRANSPORT, statistics.median(files_times), statistics.median(json_times), "s", 0.4, note
    )
