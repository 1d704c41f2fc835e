"""``model-proxy infer`` and ``model-proxy jobs`` against a small fake of the job API over HTTP."""

from __future__ import annotations

import copy
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from model_proxy import infer_command
from model_proxy.api_client import ApiClient, ApiError, JobResource
from model_proxy.cli import main
from model_proxy.progress_view import ProgressView, progress_line
from model_proxy.shared.http import new_session
from model_proxy.shared.settings import get_settings

MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.3"
SERVER = "0a6f3d5e-8f0e-4c52-9a52-2a8d2f6e8a11"
RESULT = b'{"1.2.3": {"metadata": [], "segments": ["\xc3\xa9"]}}'  # bytes as the model sent them

Answer = tuple[int, dict[str, str], bytes]


def job_document(job_id: str, state: str, **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": job_id,
        "state": state,
        "request": {
            "task": "segmentation",
            "model": MODEL,
            "server": SERVER,
            "level": "/studies/series",
            "study": STUDY,
            "series": SERIES,
            "instance": None,
            "dataFilters": [],
        },
        "progress": {
            "instancesFetched": 0,
            "instancesTotal": None,
            "bytesFetched": 0,
            "bytesTotal": None,
        },
        "createdAt": "2024-05-01T12:03:04.250000+00:00",
        "startedAt": None,
        "inferringAt": None,
        "finishedAt": None,
        "updatedAt": "2024-05-01T12:03:04.250000+00:00",
        "attempts": 1,
        "error": None,
        "links": {"self": f"/jobs/{job_id}", "result": f"/jobs/{job_id}/result"},
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key] = {**document[key], **value}
        else:
            document[key] = value
    return document


def progress(fetched: int, total: int | None, bytes_fetched: int = 0) -> dict[str, Any]:
    return {"instancesFetched": fetched, "instancesTotal": total, "bytesFetched": bytes_fetched}


# What GET /jobs/{id} answers on successive calls for the job each model's submission creates;
# the last state repeats.
SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "ok": [
        job_document("0" * 31 + "1", "queued"),
        job_document("0" * 31 + "1", "fetching", progress=progress(3, 10, 30_000)),
        job_document("0" * 31 + "1", "fetching", progress=progress(10, 10, 100_000)),
        job_document("0" * 31 + "1", "inferring", progress=progress(10, 10, 100_000)),
        job_document("0" * 31 + "1", "succeeded", progress=progress(10, 10, 100_000)),
    ],
    "failing": [
        job_document("0" * 31 + "2", "queued"),
        job_document("0" * 31 + "2", "fetching", progress=progress(0, None, 2_500_000)),
        job_document(
            "0" * 31 + "2",
            "failed",
            error={"code": "model_failed", "message": f"model {MODEL} answered 500"},
        ),
    ],
    "cancelled": [
        job_document("0" * 31 + "3", "queued"),
        job_document("0" * 31 + "3", "cancelled"),
    ],
    "slow": [job_document("0" * 31 + "4", "queued")],
}


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class FakeApi:
    """The job API as plain functions of (method, path, query, headers): scripted jobs."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    jobs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    busy_polls: int = 0  # how many GET /jobs/{id} answer 503 before the script goes on
    events: str = "missing"  # GET /jobs/{id}/events: "missing" (404), "stream", or "json"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, url: str, headers: dict[str, str]) -> Answer:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        with self.lock:
            self.received.append(Received(method, parts.path, query, headers))
            segments = parts.path.strip("/").split("/")
            if method == "GET" and segments[0] in ("segmentations", "annotations", "predictions"):
                return self.submit(segments[1], query)
            if segments[0] == "jobs" and len(segments) == 1 and method == "GET":
                return self.listing(query)
            if segments[0] == "jobs" and len(segments) in (2, 3):
                if segments[1] not in self.jobs:
                    return error(404, "job_not_found", f"no job {segments[1]}")
                if len(segments) == 3 and segments[2] == "result" and method == "GET":
                    return self.result(segments[1])
                if len(segments) == 3 and segments[2] == "events" and self.events != "missing":
                    return self.stream(segments[1])
                if len(segments) == 2 and method == "GET":
                    return self.poll(segments[1])
                if len(segments) == 2 and method == "DELETE":
                    return self.cancel(segments[1])
            return error(404, "not_found", "no such route")

    def submit(self, model: str, query: dict[str, list[str]]) -> Answer:
        if query.get("async") != ["true"]:
            return error(400, "invalid_request", "this fake only answers async requests")
        if model == "cached":
            return 200, {"Content-Type": "application/json"}, RESULT
        if model == "busy":
            return error(429, "queue_full", f"model {MODEL} has too many queued jobs", "7")
        if model not in SCRIPTS:
            return error(404, "unknown_model", f"unknown model {model}")
        script = copy.deepcopy(SCRIPTS[model])
        job_id = script[0]["id"]
        self.jobs[job_id] = script
        return 202, {"Location": f"/jobs/{job_id}"}, json.dumps(script[0]).encode()

    def current(self, job_id: str) -> dict[str, Any]:
        if job_id in self.cancelled:
            return job_document(job_id, "cancelled")
        return self.jobs[job_id][0]

    def poll(self, job_id: str) -> Answer:
        if self.busy_polls:
            self.busy_polls -= 1
            return error(503, "service_unavailable", "Redis is busy", "0")
        script = self.jobs[job_id]
        if len(script) > 1:
            script.pop(0)
        return ok(self.current(job_id))

    def stream(self, job_id: str) -> Answer:
        """Every remaining step of the job's script as an event (``json``: a proxy that
        answers with the job as JSON instead)."""
        if self.events == "json":
            return ok(self.current(job_id))
        script = self.jobs[job_id]
        chunks = [b"retry: 2000\n\n", b": keep-alive\n\n"]
        for number, document in enumerate(script, start=1):
            done = document["state"] in ("succeeded", "failed", "cancelled")
            kind = "end" if done else "state"
            data = json.dumps(document)
            chunks.append(f"event: {kind}\nid: {number}\ndata: {data}\n\n".encode())
        del script[:-1]
        return 200, {"Content-Type": "text/event-stream; charset=utf-8"}, b"".join(chunks)

    def result(self, job_id: str) -> Answer:
        document = self.current(job_id)
        if document["state"] == "succeeded":
            return 200, {"Content-Type": "application/json"}, RESULT
        if document["state"] == "failed":
            status, body = 502, {**document["error"], "jobId": job_id}
            return status, {}, json.dumps(body).encode()
        if document["state"] == "cancelled":
            return error(410, "job_cancelled", f"job {job_id} was cancelled")
        return 202, {"Retry-After": "1"}, json.dumps(document).encode()

    def cancel(self, job_id: str) -> Answer:
        if self.current(job_id)["state"] in ("succeeded", "failed", "cancelled"):
            return error(409, "job_finished", f"job {job_id} has already finished")
        self.cancelled.add(job_id)
        return ok(self.current(job_id))

    def listing(self, query: dict[str, list[str]]) -> Answer:
        documents = [self.current(job_id) for job_id in reversed(list(self.jobs))]
        if "state" in query:
            documents = [d for d in documents if d["state"] == query["state"][0]]
        documents = documents[: int(query.get("limit", ["100"])[0])]
        return ok({"jobs": documents})


def ok(document: object) -> Answer:
    return 200, {"Content-Type": "application/json"}, json.dumps(document).encode()


def error(status: int, code: str, message: str, retry_after: str | None = None) -> Answer:
    headers = {"Content-Type": "application/json"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return status, headers, json.dumps({"message": message, "code": code}).encode()


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True


def serve(respond: Callable[[str, str, dict[str, str]], Answer]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes

        def handle_one(self) -> None:
            status, headers, body = respond(self.command, self.path, dict(self.headers.items()))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_DELETE = handle_one

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """The CLI reads its settings once per process; each test sets its own environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    monkeypatch.delenv("MODEL_PROXY_API_URL", raising=False)
    fake = FakeApi()
    for base_url in serve(fake.answer):
        fake.base_url = base_url
        yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    get_settings.cache_clear()  # as a new process would, read the environment of this call
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def infer(api: FakeApi, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run(capsys, "infer", *argv, "--api", api.base_url, "--poll", "0.01")


# --- infer ---------------------------------------------------------------------------------------


def test_infer_follows_the_job_and_writes_the_result_as_received(
    api: FakeApi, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code = main(["infer", "ok", STUDY, SERIES, "--api", api.base_url, "--poll", "0.01"])
    captured = capsysbinary.readouterr()

    assert code == 0
    assert captured.out == RESULT
    lines = captured.err.decode().splitlines()
    assert lines[0] == f"model-proxy: job {'0' * 31}1 submitted"
    # Not a terminal: one line per state, with the progress of the moment.
    assert lines[1:] == [
        "queued",
        "fetching  [#######-----------------] 3/10 instances",
        "inferring [########################] 10/10 instances",
        "succeeded [########################] 10/10 instances",
    ]


def test_infer_sends_the_request_the_contract_describes(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    filters = '[{"dataKey": "series-one", "uuid": "1.2.3"}]'
    code, _, _ = infer(
        api,
        capsys,
        "ok",
        STUDY,
        SERIES,
        INSTANCE,
        "--task",
        "annotation",
        "--server",
        SERVER,
        "--data-filters",
        filters,
        "--no-cache",
    )

    assert code == 0
    submission = api.received[0]
    assert (
        submission.path == f"/annotations/ok/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}"
    )
    assert submission.query == {
        "async": ["true"],
        "server": [SERVER],
        "data-filters": ['[{"dataKey":"series-one","uuid":"1.2.3"}]'],
    }
    assert submission.headers["Cache-Control"] == "no-cache"
    assert [(r.method, r.path) for r in api.received[-2:]] == [
        ("GET", f"/jobs/{'0' * 31}1"),
        ("GET", f"/jobs/{'0' * 31}1/result"),
    ]


def test_infer_without_options_asks_for_a_cached_answer_from_the_default_server(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    infer(api, capsys, "ok", STUDY)

    submission = api.received[0]
    assert submission.path == f"/segmentations/ok/studies/{STUDY}"
    assert submission.query == {"async": ["true"]}
    assert "Cache-Control" not in submission.headers


def test_infer_writes_the_result_to_output(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "result.json"
    code, out, _ = infer(api, capsys, "ok", STUDY, "--output", str(output))

    assert code == 0
    assert out == ""
    assert output.read_bytes() == RESULT


def test_a_cached_answer_is_written_at_once(
    api: FakeApi, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code = main(["infer", "cached", STUDY, "--api", api.base_url])
    captured = capsysbinary.readouterr()

    assert code == 0
    assert captured.out == RESULT
    assert captured.err.decode() == "model-proxy: answered from the cache\n"
    assert len(api.received) == 1


def test_a_failed_job_exits_1_with_its_code_and_message(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = infer(api, capsys, "failing", STUDY)

    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert "fetching  0 instances, 2.5 MB" in lines  # no total known: bytes, without a bar
    assert lines[-2] == "failed"
    assert lines[-1] == f"model-proxy: model_failed: model {MODEL} answered 500"


def test_a_cancelled_job_exits_1(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = infer(api, capsys, "cancelled", STUDY)

    assert code == 1
    assert out == ""
    assert err.splitlines()[-1] == f"model-proxy: job_cancelled: job {'0' * 31}3 was cancelled"


def test_a_full_queue_exits_2_with_the_retry_after(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = infer(api, capsys, "busy", STUDY)

    assert code == 2
    assert out == ""
    assert err == (
        f"model-proxy: queue_full: model {MODEL} has too many queued jobs "
        "(the API asks to try again in 7 s)\n"
    )


def test_an_unavailable_api_while_polling_is_waited_out(
    api: FakeApi, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    api.busy_polls = 2  # each 503 says Retry-After: 0

    code = main(["infer", "ok", STUDY, "--api", api.base_url, "--poll", "0.01"])

    assert code == 0
    assert capsysbinary.readouterr().out == RESULT


def test_a_dicom_out_folder_that_cannot_be_written_exits_2_before_submitting(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = infer(api, capsys, "ok", STUDY, "--dicom-out", str(blocker / "out"))

    assert code == 2
    assert err.startswith(f"model-proxy: cannot write DICOM files in {blocker / 'out'}: ")
    assert api.received == []


def test_an_unknown_model_exits_2(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = infer(api, capsys, "nonexistent", STUDY)

    assert code == 2
    assert err == "model-proxy: unknown_model: unknown model nonexistent\n"


def test_an_unreachable_api_exits_2_naming_its_url(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once closed

    code, _, err = run(capsys, "infer", "ok", STUDY, "--api", url)

    assert code == 2
    assert err.startswith(
        f"model-proxy: api_unreachable: cannot reach the model-proxy API at {url}"
    )


def test_timeout_gives_up_waiting_and_says_how_to_cancel(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = infer(api, capsys, "slow", STUDY, "--timeout", "0")

    assert code == 124
    assert out == ""
    job_id = "0" * 31 + "4"
    assert err.splitlines()[-1] == (
        f"model-proxy: timeout: job {job_id} is still queued after 0 s and goes on. "
        f"To cancel it: model-proxy jobs cancel {job_id} --api {api.base_url}"
    )


def test_ctrl_c_names_the_job_and_how_to_cancel_it(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(infer_command, "_pause", interrupt)
    monkeypatch.setenv("MODEL_PROXY_API_URL", api.base_url)

    code, out, err = run(capsys, "infer", "slow", STUDY)

    assert code == 130
    assert out == ""
    job_id = "0" * 31 + "4"
    assert err.splitlines()[-1] == (
        f"model-proxy: interrupted; job {job_id} goes on. "
        f"To cancel it: model-proxy jobs cancel {job_id}"
    )


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--data-filters", "{}"], "must be a JSON array"),
        (["--data-filters", "[nope"], "not JSON"),
        (["--poll", "0"], "must be more than 0"),
        (["--timeout", "-1"], "must be a finite number"),
        (["--task", "classification"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["infer", "ok", STUDY, *argv])

    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err


# --- jobs ----------------------------------------------------------------------------------------


def test_jobs_lists_recent_jobs_as_a_table(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    infer(api, capsys, "ok", STUDY)
    infer(api, capsys, "failing", STUDY)

    code, out, _ = run(capsys, "jobs", "--api", api.base_url)

    assert code == 0
    header, newest, oldest = out.splitlines()
    assert header.split() == ["ID", "STATE", "TASK", "MODEL", "LEVEL", "PROGRESS", "CREATED"]
    assert newest.split() == [
        "0" * 31 + "2",
        "failed",
        "segmentation",
        MODEL,
        "/studies/series",
        "-",
        "2024-05-01",
        "12:03:04Z",
    ]
    assert oldest.split()[:2] == ["0" * 31 + "1", "succeeded"]
    assert "10/10 instances" in oldest
    assert api.received[-1].query == {"limit": ["20"]}


def test_jobs_filters_by_state_and_says_when_there_are_none(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "jobs", "--state", "queued", "--limit", "5", "--api", api.base_url)

    assert code == 0
    assert out == ""
    assert err == "model-proxy: no queued jobs\n"
    assert api.received[-1].query == {"state": ["queued"], "limit": ["5"]}


def test_jobs_show_prints_the_job_as_json(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    infer(api, capsys, "ok", STUDY)

    code, out, _ = run(capsys, "jobs", "show", "0" * 31 + "1", "--api", api.base_url)

    assert code == 0
    assert json.loads(out) == SCRIPTS["ok"][-1]
    assert out.startswith('{\n  "id"')


def test_jobs_show_of_an_unknown_job_exits_2(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "jobs", "--api", api.base_url, "show", "f" * 32)

    assert code == 2
    assert out == ""
    assert err == f"model-proxy: job_not_found: no job {'f' * 32}\n"


def test_jobs_cancel(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    infer(api, capsys, "slow", STUDY, "--timeout", "0")
    job_id = "0" * 31 + "4"
    monkeypatch.setenv("MODEL_PROXY_API_URL", api.base_url)

    code, out, _ = run(capsys, "jobs", "cancel", job_id)
    assert (code, out) == (0, f"job {job_id} cancelled\n")
    assert api.received[-1].method == "DELETE"

    code, out, err = run(capsys, "jobs", "cancel", job_id)
    assert (code, out) == (2, "")
    assert err == f"model-proxy: job_finished: job {job_id} has already finished\n"


# --- the client and the progress line on their own -----------------------------------------------


def test_result_of_a_failed_job_raises_its_error_with_the_job_id(api: FakeApi) -> None:
    with new_session(pool_size=1) as session:
        client = ApiClient(api.base_url, session, 5.0)
        job = client.submit("segmentation", "failing", STUDY)
        assert isinstance(job, JobResource)
        while not client.job(job.id).finished:
            pass
        with pytest.raises(ApiError) as caught:
            client.result(job.id)

    assert (caught.value.status, caught.value.code, caught.value.job_id) == (
        502,
        "model_failed",
        job.id,
    )


def test_the_client_never_shows_credentials_of_the_api_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with new_session(pool_size=1) as session:
        client = ApiClient(f"http://user:secret@127.0.0.1:{port}", session, 5.0)
        with pytest.raises(ApiError) as caught:
            client.jobs()

    assert caught.value.code == "api_unreachable"
    assert "secret" not in str(caught.value)
    assert f"http://127.0.0.1:{port}" in caught.value.message


def test_a_terminal_sees_one_line_redrawn() -> None:
    stream = io.StringIO()
    view = ProgressView(stream, tty=True, width=4)
    for document in SCRIPTS["ok"]:
        view.show(JobResource.from_document(document))
    view.end()

    assert stream.getvalue() == (
        "\rqueued"
        "\rfetching  [#---] 3/10 instances"
        "\rfetching  [####] 10/10 instances"
        "\rinferring [####] 10/10 instances"
        "\rsucceeded [####] 10/10 instances\n"
    )


def test_a_shorter_line_blanks_the_rest_of_the_longer_one() -> None:
    stream = io.StringIO()
    view = ProgressView(stream, tty=True, width=4)
    view.show(JobResource.from_document(SCRIPTS["ok"][1]))
    view.show(JobResource.from_document(SCRIPTS["cancelled"][1]))

    assert stream.getvalue().split("\r")[-1] == "cancelled" + " " * 22


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({}, "queued"),
        (
            {"progress": {"bytesFetched": 3_000, "bytesTotal": 6_000}},
            "fetching  [##--] 3.0 kB of 6.0 kB",
        ),
        (
            {"progress": {"instancesFetched": 2, "bytesFetched": 999}},
            "fetching  2 instances, 999 B",
        ),
        ({"attempts": 2}, "fetching (attempt 2)"),
    ],
)
def test_progress_line(changes: dict[str, Any], line: str) -> None:
    state = "queued" if not changes else "fetching"
    document = job_document("ab" * 16, state, **changes)

    assert progress_line(JobResource.from_document(document), width=4) == line


# --- following the job's events ----------------------------------------------------------------


def _polls(api: FakeApi, job_id: str) -> int:
    return sum(1 for r in api.received if r.method == "GET" and r.path == f"/jobs/{job_id}")


def test_infer_follows_the_jobs_events_without_polling(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.events = "stream"
    code, out, err = infer(api, capsys, "ok", STUDY, SERIES)
    assert code == 0 and out.encode() == RESULT
    job_id = SCRIPTS["ok"][0]["id"]
    assert _polls(api, job_id) == 0
    events = [r for r in api.received if r.path == f"/jobs/{job_id}/events"]
    assert len(events) == 1 and events[0].headers["Accept"] == "text/event-stream"
    assert "succeeded" in err


@pytest.mark.parametrize("events", ["json", "missing"])
def test_infer_polls_when_the_events_cannot_be_streamed(
    api: FakeApi, capsys: pytest.CaptureFixture[str], events: str
) -> None:
    """A proxy that answers the stream with JSON, or an API without the route."""
    api.events = events
    code, out, _ = infer(api, capsys, "ok", STUDY, SERIES)
    assert code == 0 and out.encode() == RESULT
    assert _polls(api, SCRIPTS["ok"][0]["id"]) >= 1


def _watch(api: FakeApi, capsys: pytest.CaptureFixture[str], model: str) -> tuple[int, str]:
    client = ApiClient(api.base_url, new_session(1))
    submitted = client.submit("segmentation", model, STUDY, SERIES)
    assert isinstance(submitted, JobResource)
    code, out, _ = run(capsys, "jobs", "watch", submitted.id, "--api", api.base_url)
    return code, out


def test_jobs_watch_prints_a_line_per_event_and_exits_0_on_success(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.events = "stream"
    code, out = _watch(api, capsys, "ok")
    lines = out.splitlines()
    assert code == 0
    assert [line.split()[:2] for line in lines][-1] == ["end", "succeeded"]
    assert len(lines) == len(SCRIPTS["ok"]) - 1  # after the first poll, one line per event


@pytest.mark.parametrize(
    ("events", "model", "code", "last"),
    [("stream", "failing", 1, ["end", "failed"]), ("json", "ok", 0, ["poll", "succeeded"])],
    ids=["failed-job-exits-1", "polls-when-not-streamed"],
)
def test_jobs_watch_ends_with_the_jobs_last_line(
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    events: str,
    model: str,
    code: int,
    last: list[str],
) -> None:
    api.events = events
    exit_code, out = _watch(api, capsys, model)
    assert exit_code == code and out.splitlines()[-1].split()[:2] == last
