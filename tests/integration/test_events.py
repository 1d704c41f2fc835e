"""A job's server-sent events on the real stack: two ``model-proxy serve`` processes and a
worker on a queue of their own, the real Redis, Orthanc and example model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from bench.event_streams import StreamHolder
from devtools.dicom import DicomFile
from devtools.fault_proxy import Fault, FaultKind, FaultProxy
from devtools.processes import ManagedProcess, free_port, start_service
from model_proxy.shared.jobs import JobKeys
from model_proxy.sse import ServerEvent, parse_events
from tests.support.deployment import Deployment, Ids, PacsData, start_worker

QUEUE = "events-tests"
SLOW = "5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"  # the segmentation model, answering after 1.5 s
LONG = "6f1d2b3c-4d5e-4f60-9bac-1d2e3f4a5b6c"  # the segmentation model, answering after 10 s
# answering after 6 s: time enough to reconnect twice while it thinks, on a busy machine too
THINKING = "8b3f4d5e-6f70-4b81-9cde-3f4a5b6c7d8e"
SLOW_PACS = "7a2e3c4d-5e6f-4a70-8bcd-2e3f4a5b6c7d"  # the PACS through a proxy that slows it
STREAM_CAP = 200
# the PACS's answers relayed 2 KiB every 0.05 s (40 KB/s): the series (6 instances of about
# 9 KB) takes more than a second to arrive, an instance every quarter of a second or so, so its
# progress is seen rising whatever the machine's load
THROTTLE = Fault(FaultKind.THROTTLE, delay=0.05, after_bytes=2 * 1024)


@dataclass
class Stack:
    deployment: Deployment
    environ: dict[str, str]
    first: str  # the API process with the stream cap
    second: str
    workdir: Path
    worker: ManagedProcess | None = None

    def start_worker(self) -> None:
        if self.worker is None:
            local = Deployment(
                self.deployment.settings,
                self.environ,
                self.workdir,
                self.deployment.model_url,
                self.deployment.redis,
            )
            self.worker = start_worker(local, "events-worker", concurrency=2)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None


def _serve(name: str, environ: dict[str, str], folder: Path) -> tuple[str, ManagedProcess]:
    port = free_port()
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    return url, start_service(name, argv, folder / f"{name}.log", f"{url}/readyz", env=environ)


@pytest.fixture(scope="module")
def stack(
    deployment: Deployment, pacs: PacsData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("events")
    pacs_proxy = FaultProxy(pacs.orthanc.dicomweb)
    pacs_proxy.start()
    pacs_proxy.set(THROTTLE)
    servers = json.loads(deployment.settings.servers_file.read_text())
    servers[SLOW_PACS] = {**servers[Ids.PACS], "uri": pacs_proxy.url}
    servers[SLOW_PACS].pop("statusUri", None)
    servers[SLOW_PACS].pop("isDefault", None)
    (folder / "servers.json").write_text(json.dumps(servers))
    models = json.loads((deployment.workdir / "models.json").read_text())
    models[SLOW] = {**models[Ids.SEGMENTATION], "uri": f"{deployment.model_url}/segmentation"
                    "?delay=1.5"}  # fmt: skip
    models[LONG] = {**models[SLOW], "uri": f"{deployment.model_url}/segmentation?delay=10"}
    models[THINKING] = {**models[SLOW], "uri": f"{deployment.model_url}/segmentation?delay=6"}
    (folder / "models.json").write_text(json.dumps(models))
    environ = {
        **deployment.environ,
        "MODEL_PROXY_QUEUE_NAME": QUEUE,
        "MODEL_PROXY_MODELS_FILE": str(folder / "models.json"),
        "MODEL_PROXY_SERVERS_FILE": str(folder / "servers.json"),
        "MODEL_PROXY_PROGRESS_EVENTS_PER_SECOND": "1000",
        "MODEL_PROXY_EVENT_HEARTBEAT_SECONDS": "1",
        "MODEL_PROXY_MODEL_READ_TIMEOUT": "60",  # the long model's job runs until cancelled
        "MODEL_PROXY_ANONYMOUS": "viewer",
        "PYTHONUNBUFFERED": "1",
    }
    first, first_process = _serve(
        "events-api-1", {**environ, "MODEL_PROXY_MAX_EVENT_STREAMS": str(STREAM_CAP)}, folder
    )
    second, second_process = _serve("events-api-2", environ, folder)
    built = Stack(deployment, environ, first, second, folder)
    try:
        yield built
    finally:
        for process in (first_process, second_process, built.worker):
            if process is not None:
                process.stop()
        pacs_proxy.stop()


def _submit(api: str, model: str, pacs: PacsData, server: str = Ids.PACS) -> str:
    series = pacs.series_a[0]
    answer = requests.get(
        f"{api}/segmentations/{model}/studies/{series.study_uid}/series/{series.series_uid}",
        params={"async": "true", "server": server},
        headers={"Cache-Control": "no-cache"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


class _Stream:
    """An open ``GET /jobs/{id}/events``, read an event at a time."""

    def __init__(self, api: str, job_id: str, last_event_id: str | None = None) -> None:
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.response = requests.get(
            f"{api}/jobs/{job_id}/events", headers=headers, stream=True, timeout=(5, 10)
        )
        lines = self.response.iter_lines(decode_unicode=True)
        self._events = parse_events(line for line in lines if line is not None)

    def next(self) -> tuple[ServerEvent, dict[str, Any]]:
        event = next(self._events)
        return event, json.loads(event.data)

    def rest(self) -> list[tuple[ServerEvent, dict[str, Any]]]:
        return [(event, json.loads(event.data)) for event in self._events]

    def close(self) -> None:
        self.response.close()


def _states(events: list[tuple[ServerEvent, dict[str, Any]]]) -> list[str]:
    states: list[str] = []
    for _, job in events:
        if not states or states[-1] != job["state"]:
            states.append(job["state"])
    return states


def test_two_api_processes_stream_a_job_from_queued_to_succeeded_with_its_progress(
    stack: Stack, pacs: PacsData
) -> None:
    """Submitted while no worker runs: both processes' streams start with ``queued``; once a
    worker runs, each sees the states in order, progress rising to the total, and ``end``."""
    stack.stop_worker()  # the job waits in the queue until the streams are open
    job_id = _submit(stack.first, SLOW, pacs, server=SLOW_PACS)
    streams = [_Stream(stack.first, job_id), _Stream(stack.second, job_id)]
    seen: list[list[tuple[ServerEvent, dict[str, Any]]]] = []
    for stream in streams:
        assert stream.response.headers["Content-Type"].startswith("text/event-stream")
        assert stream.response.headers["Cache-Control"] == "no-cache"
        assert stream.response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Encoding" not in stream.response.headers
        first, job = stream.next()
        assert (first.kind, job["state"]) == ("state", "queued")
        seen.append([(first, job)])
    stack.start_worker()
    for stream, events in zip(streams, seen, strict=True):
        events += stream.rest()
        kinds = [event.kind for event, _ in events]
        assert kinds[-1] == "end" and kinds.count("end") == 1
        assert _states(events)[-3:] == ["fetching", "inferring", "succeeded"]
        fetched = [job["progress"]["instancesFetched"] for event, job in events]
        assert fetched == sorted(fetched)  # progress only rises
        assert fetched[-1] == len(pacs.series_a) == events[-1][1]["progress"]["instancesTotal"]
        assert "progress" in kinds
        inferring = next(job for _, job in events if job["state"] == "inferring")
        assert inferring["progress"]["instancesFetched"] == len(pacs.series_a)  # fetched first
        assert all(job["state"] == "fetching" for event, job in events if event.kind == "progress")
        ids = [event.id for event, _ in events]
        assert len(set(ids)) == len(ids)
        assert events[-1][1]["links"]["result"] == f"/jobs/{job_id}/result"
        stream.close()


def test_a_client_reconnecting_mid_job_gets_the_current_state_at_once(
    stack: Stack, pacs: PacsData
) -> None:
    stack.stop_worker()  # the job waits in the queue until the stream has seen it there
    job_id = _submit(stack.first, THINKING, pacs)
    stream = _Stream(stack.second, job_id)
    first, job = stream.next()
    assert job["state"] == "queued"  # so the first event's id is stale once the job runs
    stack.start_worker()
    event, total = first, len(pacs.series_a)
    while job["state"] != "inferring" or job["progress"]["instancesFetched"] < total:
        event, job = stream.next()
    stream.close()  # the model has the whole series and thinks for 6 s
    stale = _Stream(stack.first, job_id, last_event_id=first.id)
    resumed, now = stale.next()
    assert (resumed.kind, now["state"], resumed.id) == ("state", "inferring", event.id)
    stale.close()
    current = _Stream(stack.first, job_id, last_event_id=event.id)
    rest = current.rest()
    assert [e.kind for e, _ in rest] == ["end"]  # the state it had was not sent again
    assert rest[0][1]["state"] == "succeeded"


def test_a_viewer_route_asked_for_events_streams_its_job_to_the_result_link(
    stack: Stack, pacs: PacsData
) -> None:
    stack.start_worker()
    series = pacs.series_a[0]
    answer = requests.get(
        f"{stack.second}/segmentations/{Ids.SEGMENTATION}/studies/{series.study_uid}"
        f"/series/{series.series_uid}",
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
        stream=True,
        timeout=(5, 20),
    )
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    lines = answer.iter_lines(decode_unicode=True)
    events = list(parse_events(line for line in lines if line is not None))
    assert events[0].kind == "state" and events[-1].kind == "end"
    job = json.loads(events[-1].data)
    assert job["state"] == "succeeded"
    result = requests.get(stack.second + job["links"]["result"], timeout=10)
    assert result.status_code == 200 and series.series_uid in result.text


def test_jobs_watch_prints_a_line_per_event_and_exits_0(stack: Stack, pacs: PacsData) -> None:
    stack.start_worker()
    job_id = _submit(stack.first, SLOW, pacs)
    argv = [sys.executable, "-m", "model_proxy", "jobs", "watch", job_id, "--api", stack.first]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=stack.environ)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].split()[:2] == ["end", "succeeded"]
    assert lines[0].split()[0] == "state"  # the job as it stands when the stream opens
    assert not any(line.startswith("poll") for line in lines)  # it streamed


def test_an_unknown_job_is_404_json(stack: Stack) -> None:
    answer = requests.get(
        f"{stack.first}/jobs/{'0' * 32}/events", headers={"Accept": "text/event-stream"}, timeout=5
    )
    assert answer.status_code == 404 and answer.json()["code"] == "unknown_job"


def _job_records(stack: Stack) -> int:
    settings = stack.deployment.settings
    assert settings.redis_url is not None
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return sum(1 for _ in client.scan_iter(JobKeys(settings.redis_prefix).job("*")))
    finally:
        client.close()


def _viewer_stream(api: str, series: DicomFile) -> requests.Response:
    """A viewer route asked for the events of a new job of ``series``."""
    return requests.get(
        f"{api}/segmentations/{SLOW}/studies/{series.study_uid}/series/{series.series_uid}",
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache"},
        timeout=5,
    )


def test_streams_up_to_the_cap_stay_open_and_all_receive_the_end(
    stack: Stack, pacs: PacsData
) -> None:
    """The CI form of ``bench/event_streams.py``: the cap's worth of streams of a job that
    waits for a worker stay open 5 s (heartbeats every second), one more is 503 ``busy`` (on a
    viewer route, before it makes a job), and a cancel reaches every one as its ``end``
    event."""
    stack.stop_worker()  # the job stays queued, however long the streams take to open
    job_id = _submit(stack.first, LONG, pacs)

    async def scenario() -> None:
        holder = StreamHolder(stack.first, job_id)
        await holder.open(STREAM_CAP)
        assert holder.watch.opened == STREAM_CAP
        assert set(holder.watch.first_events) == {"state"}
        busy = await asyncio.to_thread(
            requests.get, f"{stack.first}/jobs/{job_id}/events", timeout=5
        )
        assert busy.status_code == 503 and busy.json()["code"] == "busy"
        assert busy.headers["Retry-After"] == "1"
        jobs_before = await asyncio.to_thread(_job_records, stack)
        refused = await asyncio.to_thread(_viewer_stream, stack.first, pacs.series_b[0])
        assert refused.status_code == 503 and refused.json()["code"] == "busy"
        assert await asyncio.to_thread(_job_records, stack) == jobs_before  # it made no job
        await asyncio.sleep(5)
        assert holder.watch.closed_early == 0
        cancelled = await asyncio.to_thread(
            requests.delete, f"{stack.first}/jobs/{job_id}", timeout=10
        )
        assert cancelled.status_code == 200, cancelled.text
        watch = await holder.wait(timeout=20)
        assert watch.ended == STREAM_CAP and watch.closed_early == 0

    asyncio.run(scenario())
