"""Calling a model: unwrapping its JSON, and ModelClient against a tiny local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from model_proxy.shared.config import Catalog, ModelConfig, SizeLimits
from model_proxy.shared.errors import (
    BadModelResponse,
    DicomNotFound,
    ModelAnswerTooLarge,
    ModelFailed,
    ModelTimeout,
    ModelUnreachable,
)
from model_proxy.shared.http import Timeouts, new_session
from model_proxy.shared.model_client import ModelClient, unwrap_model_json

MODEL_ID = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
DOCUMENT = {"1.2.3": {"metadata": [], "1.2.3.4": {"1.2.3.4.5": {"segments": []}}}}

# --- unwrap_model_json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"1.2.3": {"metadata": []}}',
        b'{ "spaced" :  1 }\n',
        b"[1, 2]",
        b"null",
        b"42",
        b'"just text"',
        b'"[1,2]"',
        b'"\\"a string in a string\\""',
        json.dumps(json.dumps(json.dumps(DOCUMENT))).encode(),  # wrapped twice: left alone
    ],
)
def test_other_json_passes_byte_for_byte(body: bytes) -> None:
    assert unwrap_model_json(body) is body


@pytest.mark.parametrize(
    "document",
    [
        DOCUMENT,
        {},
        {"1.2.3": {"metadata": [{"title": "Lung volume", "value": "4.2 cm\u00b3"}]}},
        {"title": "\u2603 snowman", "quote": '"', "backslash": "\\", "newline": "\n"},
    ],
)
def test_a_document_wrapped_in_a_string_is_unwrapped_once(document: dict[str, object]) -> None:
    """What FastAPI's ORJSONResponse makes of ``orjson.dumps(dict)`` (contract section 8)."""
    inner = json.dumps(document, ensure_ascii=False)
    for wrapped in (json.dumps(inner), json.dumps(inner, ensure_ascii=False)):
        body = wrapped.encode()
        unwrapped = unwrap_model_json(body)
        assert unwrapped == inner.encode()
        assert json.loads(unwrapped) == document


@pytest.mark.parametrize("body", [b"", b"<html>Internal Server Error</html>", b"{", b"\xff\xfe"])
def test_not_json(body: bytes) -> None:
    with pytest.raises(BadModelResponse) as caught:
        unwrap_model_json(body)
    assert caught.value.message == "the model did not answer with JSON"


# --- a tiny model server ------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeModel:
    base_url: str
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "/object": (200, "application/json", json.dumps(DOCUMENT).encode()),
    "/wrapped": (200, "application/json", json.dumps(json.dumps(DOCUMENT)).encode()),
    "/created": (201, "application/json", b'{"a": 1}'),
    "/html": (200, "text/html", b"<html>hello</html>"),
    "/empty": (200, "application/json", b""),
    "/detail": (500, "application/json", b'{"detail": "CUDA out of memory"}'),
    "/message": (503, "application/json", b'{"message": "busy", "detail": "ignored"}'),
    "/validation": (
        422,
        "application/json",
        b'{"detail": [{"loc": ["body"], "msg": "field required", "type": "missing"}]}',
    ),
    "/long": (500, "application/json", json.dumps({"detail": "x" * 1000}).encode()),
    "/kilobyte": (200, "application/json", json.dumps({"a": "x" * 1000}).encode()),
    "/huge-error": (500, "application/json", json.dumps({"detail": "x" * 100_000}).encode()),
    "/not-found": (404, "text/plain", b"Not Found"),
    "/redirect-like": (302, "text/plain", b""),
}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            chunk = handler.rfile.read(size + 2)[:-2]
            if size == 0:
                return body
            body += chunk
    return handler.rfile.read(int(handler.headers.get("Content-Length", 0)))


def _answer_endlessly(handler: BaseHTTPRequestHandler, stop: threading.Event) -> None:
    """A chunked JSON answer of 50 MB, unless the client hangs up first."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    chunk = b"[" + b"0," * 5000
    try:
        for _ in range(5000):
            if stop.is_set():
                break
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            chunk = b"0," * 5000
        handler.wfile.write(b"2\r\n0]\r\n0\r\n\r\n")
    except OSError:
        pass  # the client hung up: what the test wants
    handler.close_connection = True


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up mid-request is part of some tests


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModel]:
    fake: FakeModel

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            if self.path.startswith("/slow"):
                fake.release.wait(30)  # until the module is done; the client gives up first
                return
            body = _read_body(self)
            if self.path.startswith("/endless"):
                fake.received.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
                _answer_endlessly(self, fake.release)
                return
            fake.received.append(
                Received(self.command, self.path, dict(self.headers.items()), body)
            )
            status, content_type, answer = ANSWERS.get(
                self.path.split("?")[0], (200, "application/json", b'{"echo": true}')
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = QuietServer(("127.0.0.1", 0), Handler)
    fake = FakeModel(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def model(model_server: FakeModel) -> FakeModel:
    model_server.received.clear()
    return model_server


@pytest.fixture
def client() -> Iterator[ModelClient]:
    session = new_session(pool_size=2)
    yield ModelClient(session, Timeouts(connect=5.0, read=0.2))
    session.close()


# --- answers ------------------------------------------------------------------------------------


def test_a_plain_object_is_returned_as_sent(model: FakeModel, client: ModelClient) -> None:
    assert client.infer(MODEL_ID, model.base_url + "/object", b"[]") == (
        json.dumps(DOCUMENT).encode()
    )


def test_a_wrapped_answer_is_unwrapped(model: FakeModel, client: ModelClient) -> None:
    result = client.infer(MODEL_ID, model.base_url + "/wrapped", b"[]")
    assert json.loads(result) == DOCUMENT


def test_any_2xx_is_success(model: FakeModel, client: ModelClient) -> None:
    assert client.infer(MODEL_ID, model.base_url + "/created", b"[]") == b'{"a": 1}'


@pytest.mark.parametrize("path", ["/html", "/empty"])
def test_a_2xx_that_is_not_json(model: FakeModel, client: ModelClient, path: str) -> None:
    with pytest.raises(BadModelResponse) as caught:
        client.infer(MODEL_ID, model.base_url + path, b"[]")
    assert caught.value.message == f"model {MODEL_ID} did not answer with JSON"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/detail", "answered HTTP 500: CUDA out of memory"),
        ("/message", "answered HTTP 503: busy"),
        ("/validation", "answered HTTP 422"),
        ("/not-found", "answered HTTP 404"),
        ("/redirect-like", "answered HTTP 302"),
        ("/long", "answered HTTP 500: " + "x" * 200),
        ("/huge-error", "answered HTTP 500"),  # only the first 64 KiB of an error are read
    ],
)
def test_a_non_2xx_is_a_model_failure(
    model: FakeModel, client: ModelClient, path: str, message: str
) -> None:
    with pytest.raises(ModelFailed) as caught:
        client.infer(MODEL_ID, model.base_url + path, b"[]")
    assert type(caught.value) is ModelFailed
    assert caught.value.message == f"model {MODEL_ID} {message}"


# --- the request ----------------------------------------------------------------------------------


def test_the_uri_is_posted_verbatim_with_json_headers(
    model: FakeModel, client: ModelClient
) -> None:
    client.infer(MODEL_ID, model.base_url + "/single-series-endpoint/predict?x=1", b'["[1]"]')
    (request,) = model.received
    assert request.method == "POST"
    assert request.path == "/single-series-endpoint/predict?x=1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Length"] == "7"
    assert request.body == b'["[1]"]'


def test_an_iterable_body_is_streamed_chunked(model: FakeModel, client: ModelClient) -> None:
    chunks = [b"[", b'"[0,1,2]"', b",", b'"[255]"', b"]"]
    client.infer(MODEL_ID, model.base_url + "/echo", iter(chunks))
    (request,) = model.received
    assert request.headers["Transfer-Encoding"] == "chunked"
    assert request.body == b"".join(chunks)
    assert json.loads(request.body) == ["[0,1,2]", "[255]"]


def test_an_error_of_the_body_itself_is_not_hidden(model: FakeModel, client: ModelClient) -> None:
    """A PACS failure while the body streams must reach the job record as itself."""

    def body() -> Iterator[bytes]:
        yield b"["
        raise DicomNotFound("the series has no instances on server b5208f48")

    with pytest.raises(DicomNotFound):
        client.infer(MODEL_ID, model.base_url + "/echo", body())


# --- the model is slow or away --------------------------------------------------------------------


def test_a_model_that_does_not_answer_in_time(model: FakeModel, client: ModelClient) -> None:
    with pytest.raises(ModelTimeout) as caught:
        client.infer(MODEL_ID, model.base_url + "/slow", b"[]")
    assert caught.value.message == f"model {MODEL_ID} did not answer in time"


def test_a_model_that_does_not_answer_in_time_while_streaming(
    model: FakeModel, client: ModelClient
) -> None:
    with pytest.raises(ModelTimeout):
        client.infer(MODEL_ID, model.base_url + "/slow", iter([b"[", b"]"]))


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_model(client: ModelClient, closed_port: int) -> None:
    with pytest.raises(ModelUnreachable) as caught:
        client.infer(MODEL_ID, f"http://user:secret@127.0.0.1:{closed_port}/predict", b"[]")
    assert caught.value.message == f"model {MODEL_ID} cannot be reached"


def test_an_invalid_uri(client: ModelClient) -> None:
    with pytest.raises(ModelUnreachable) as caught:
        client.infer(MODEL_ID, "http://", b"[]")
    assert caught.value.message == f"model {MODEL_ID}: the request failed"


# --- the answer's size cap ------------------------------------------------------------------------

KILOBYTE_ANSWER = len(json.dumps({"a": "x" * 1000}))
SMALL_CAP_MODEL = "e185a2a3-b4c5-46d7-b1e2-6d7e8f900112"


def capped_client(answer: int, model_answer: int | None = None) -> ModelClient:
    """A client whose default answer cap is ``answer``; SMALL_CAP_MODEL's is ``model_answer``."""
    entry = {"uri": "http://model/predict", "task": "segmentation", "supports": ["/studies"]}
    if model_answer is not None:
        entry["maxAnswerBytes"] = model_answer
    catalog = Catalog(
        servers={},
        models={SMALL_CAP_MODEL: ModelConfig.model_validate(entry)},
        default_server_id="",
    )
    return ModelClient(
        new_session(pool_size=2),
        Timeouts(connect=5.0, read=5.0),
        catalog=catalog,
        limits=SizeLimits(instance=1, input=1, answer=answer),
    )


def test_an_answer_of_exactly_the_cap_is_read(model: FakeModel) -> None:
    client = capped_client(answer=KILOBYTE_ANSWER)
    assert len(client.infer(MODEL_ID, model.base_url + "/kilobyte", b"[]")) == KILOBYTE_ANSWER


def test_an_answer_over_the_cap_is_refused_naming_the_setting(model: FakeModel) -> None:
    client = capped_client(answer=KILOBYTE_ANSWER - 1)
    with pytest.raises(ModelAnswerTooLarge) as caught:
        client.infer(MODEL_ID, model.base_url + "/kilobyte", b"[]")
    assert caught.value.code == "model_answer_too_large"
    assert caught.value.message == (
        f"model {MODEL_ID} answered with more than {KILOBYTE_ANSWER - 1} bytes; raise "
        "maxAnswerBytes of the model in models.json (or MODEL_PROXY_MAX_ANSWER_BYTES) to accept it"
    )
    assert not caught.value.transient


def test_the_models_own_cap_overrides_the_default(model: FakeModel) -> None:
    client = capped_client(answer=10 * KILOBYTE_ANSWER, model_answer=100)
    with pytest.raises(ModelAnswerTooLarge):
        client.infer(SMALL_CAP_MODEL, model.base_url + "/kilobyte", b"[]")
    client = capped_client(answer=100, model_answer=10 * KILOBYTE_ANSWER)
    assert len(client.infer(SMALL_CAP_MODEL, model.base_url + "/kilobyte", b"[]")) > 100


def test_an_endless_answer_is_refused_while_it_streams(model: FakeModel) -> None:
    """Without Content-Length the cap is met while reading, long before the answer ends."""
    client = capped_client(answer=1_000_000)
    with pytest.raises(ModelAnswerTooLarge):
        client.infer(MODEL_ID, model.base_url + "/endless", b"[]")
    assert client.infer(MODEL_ID, model.base_url + "/object", b"[]")  # the client still works
