"""The status page's parts on canned inputs: safe URIs, our own error wording, the verdict,
content negotiation, the HTML renderer, and the 404 when the page is turned off."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devtools.processes import free_port
from model_proxy.broker.app import create_app
from model_proxy.broker.status import (
    EndpointStatus,
    RedisStatus,
    StatusReport,
    WorkersStatus,
)
from model_proxy.broker.status_page import prefers_html, render_status_page
from model_proxy.shared.settings import Settings

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
SERVER_DOWN = "0c5c2d3e-5a55-4a4e-8f11-9a7b2f8c1d01"
SERVER_UNKNOWN = "1d6d3e4f-6b66-4b5f-9a22-ab8c3f9d2e02"
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
MODEL_DOWN = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
SECRET = "s3cret-Pa55word"
CHECKED_AT = dt.datetime(2026, 11, 28, 3, 10, 0, 123000, tzinfo=dt.UTC)


def test_the_redis_entry_strips_userinfo() -> None:
    redis_status = RedisStatus("up", f"redis://:{SECRET}@localhost:6379/0", 0.3)
    assert SECRET not in json.dumps(redis_status.to_json())


# --- the verdict -------------------------------------------------------------------------------


def report(
    *,
    servers: dict[str, EndpointStatus] | None = None,
    models: dict[str, EndpointStatus] | None = None,
    redis_status: RedisStatus | None = None,
    workers: WorkersStatus | None = None,
    jobs: dict[str, int] | None = None,
) -> StatusReport:
    return StatusReport(
        servers=servers
        if servers is not None
        else {
            SERVER: EndpointStatus(
                f"http://reader:{SECRET}@pacs/dicom-web",
                "http://pacs/dicom-web/studies",
                "up",
                200,
                12.5,
            ),
            SERVER_UNKNOWN: EndpointStatus("http://other/dicom-web", None, "unknown"),
        },
        models=models
        if models is not None
        else {MODEL: EndpointStatus("http://m/predict", "http://m/health", "up", 200, 3.2)},
        redis=redis_status or RedisStatus("up", "redis://127.0.0.1:6379/0", 0.42),
        workers=workers or WorkersStatus("up", ("celery@worker-1",)),
        queues={"inference": 2, "slow": 0},
        jobs=jobs
        if jobs is not None
        else {
            "queued": 2,
            "fetching": 0,
            "inferring": 1,
            "succeeded": 40,
            "failed": 3,
            "cancelled": 0,
        },
        checked_at=CHECKED_AT,
    )


def test_all_up_is_ok_and_unknown_entries_are_no_problem() -> None:
    everything = report()
    assert everything.overall == "ok"
    assert everything.problems == ()


def test_a_down_server_or_model_is_degraded_and_named() -> None:
    down = EndpointStatus("http://p", "http://p/studies", "down", 401, 5.0, "HTTP 401")
    refused = EndpointStatus("http://m", "http://m/health", "down", error="connection refused")
    degraded = report(
        servers={SERVER_DOWN: down}, models={MODEL_DOWN: refused, MODEL: report().models[MODEL]}
    )
    assert degraded.overall == "degraded"
    assert degraded.problems == (
        f"server {SERVER_DOWN}: HTTP 401",
        f"model {MODEL_DOWN}: connection refused",
    )


def test_no_redis_or_no_worker_is_down() -> None:
    no_redis = report(
        redis_status=RedisStatus("down", "redis://r:6379/0", error="connection refused"),
        workers=WorkersStatus("unknown", error="not asked: Redis cannot be reached"),
        jobs={},
    )
    assert no_redis.overall == "down"
    assert no_redis.problems == ("Redis: connection refused; no job can be queued",)
    no_worker = report(workers=WorkersStatus("down"))
    assert no_worker.overall == "down"
    assert no_worker.problems == ("no worker answered: queued jobs wait until one starts",)


def test_the_json_has_the_documented_shape() -> None:
    body = report().to_json()
    assert set(body) == {
        "overall",
        "problems",
        "servers",
        "models",
        "redis",
        "workers",
        "queues",
        "jobs",
        "checkedAt",
    }
    assert body["servers"][SERVER] == {
        "uri": "http://pacs/dicom-web",
        "statusUri": "http://pacs/dicom-web/studies",
        "status": "up",
        "ok": True,
        "statusCode": 200,
        "latencyMs": 12.5,
    }
    assert body["servers"][SERVER_UNKNOWN]["ok"] is None
    assert body["workers"] == {"status": "up", "count": 1, "names": ["celery@worker-1"]}
    assert body["redis"] == {"status": "up", "uri": "redis://127.0.0.1:6379/0", "latencyMs": 0.42}
    assert body["queues"] == {"inference": 2, "slow": 0}
    assert body["checkedAt"] == "2026-11-28T03:10:00.123Z"
    assert SECRET not in json.dumps(body)


# --- content negotiation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8", True),
        ("text/html", True),
        ("text/*", True),
        ("*/*", False),
        ("", False),
        ("application/json", False),
        ("application/json, text/html", False),
        ("text/html;q=0.5, application/json", False),
        ("application/json;q=0.4, text/html;q=0.9", True),
        ("text/html;q=0", False),
    ],
)
def test_html_only_when_the_client_prefers_it(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


# --- the HTML page -----------------------------------------------------------------------------


class _Page(HTMLParser):
    """The rendered text, each table row's cells by data-key, and every tag seen."""

    def __init__(self, document: str) -> None:
        super().__init__()
        self.text = ""
        self.rows: dict[str, dict[str, Any]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._row: str | None = None
        self._in_style = False
        self.feed(document)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        self._in_style = tag == "style"
        if tag not in ("wbr", "span", "b", "a", "code"):  # a block or a cell: words part here
            self.handle_data(" ")
        if tag == "tr" and attributes.get("data-key"):
            key = str(attributes["data-key"])
            self._row = key
            self.rows[key] = {"status": attributes.get("data-status"), "text": ""}

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            return
        self.text += data
        if self._row is not None:
            self.rows[self._row]["text"] += data

    def row_text(self, key: str) -> str:
        return " ".join(self.rows[key]["text"].split())

    @property
    def all_text(self) -> str:
        return " ".join(self.text.split())


def test_the_page_shows_each_entry_with_its_status_latency_and_error() -> None:
    down = EndpointStatus(
        "http://p/dicom-web", "http://p/dicom-web/studies", "down", 401, 8.0, "HTTP 401"
    )
    document = render_status_page(report(servers={**report().servers, SERVER_DOWN: down}))
    page = _Page(document)
    assert page.rows[SERVER]["status"] == "up"
    assert "UP" in page.row_text(SERVER).upper() and "12.5 ms" in page.row_text(SERVER)
    assert "http://pacs/dicom-web" in page.row_text(SERVER)
    assert page.rows[SERVER_DOWN]["status"] == "down"
    assert "HTTP 401" in page.row_text(SERVER_DOWN)
    assert page.rows[SERVER_UNKNOWN]["status"] == "unknown"
    assert "no statusUri configured" in page.row_text(SERVER_UNKNOWN)
    assert page.rows[MODEL]["status"] == "up"
    text = page.all_text
    assert "Degraded" in text and f"server {SERVER_DOWN}: HTTP 401" in text
    assert "celery@worker-1" in text and "0.42 ms" in text
    assert "Jobs (latest 200)" in text and "succeeded" in text and "40" in text
    assert "inference" in text
    assert "2026-11-28 03:10:00.123 UTC" in text
    assert SECRET not in document


def test_the_verdict_heads_the_page() -> None:
    ok = _Page(render_status_page(report()))
    headers = [attrs for tag, attrs in ok.tags if tag == "header"]
    assert headers[0]["data-overall"] == "ok" and "All systems up" in ok.all_text
    down = _Page(render_status_page(report(workers=WorkersStatus("down"))))
    assert next(a for t, a in down.tags if t == "header")["data-overall"] == "down"
    assert "no worker answered" in down.all_text


def test_the_page_is_self_contained_and_escapes_what_it_shows() -> None:
    hostile = EndpointStatus("http://m/<b>", "http://m/health", "down", error="<script>x</script>")
    document = render_status_page(report(models={MODEL_DOWN: hostile}))
    page = _Page(document)
    assert "<script>" not in document and "&lt;script&gt;" in document
    assert not [t for t, a in page.tags if t in ("script", "link", "img", "iframe")]
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", document)
    assert "url(" not in document  # no fonts or images fetched by the CSS
    assert [t for t, _ in page.tags].count("style") == 1


def test_the_page_says_when_redis_is_down() -> None:
    page = _Page(
        render_status_page(
            report(
                redis_status=RedisStatus("down", "redis://r:6379/0", error="connection refused"),
                workers=WorkersStatus("unknown", error="not asked: Redis cannot be reached"),
                jobs={},
            )
        )
    )
    assert "Down" in page.all_text
    assert "connection refused" in page.all_text
    assert "not read: Redis cannot be reached" in page.all_text


# --- turned on and off -------------------------------------------------------------------------


@pytest.fixture()
def configs(tmp_path: Path) -> Path:
    (tmp_path / "servers.json").write_text(
        json.dumps(
            {
                SERVER: {
                    "uri": "http://127.0.0.1:9/dicom-web",
                    "authType": "basicAuth",
                    "login": "reader",
                    "password": SECRET,
                }
            }
        )
    )
    (tmp_path / "models.json").write_text(
        json.dumps(
            {
                MODEL: {
                    "uri": "http://127.0.0.1:9/p",
                    "task": "segmentation",
                    "supports": ["/studies"],
                }
            }
        )
    )
    return tmp_path


@contextmanager
def client_for(configs: Path, **settings: Any) -> Iterator[TestClient]:
    app = create_app(
        Settings(
            servers_file=configs / "servers.json", models_file=configs / "models.json", **settings
        ),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: no Redis needed
        environ={},
    )
    with TestClient(app) as client:
        yield client


def test_the_page_is_off_by_default_and_answers_404(configs: Path) -> None:
    with client_for(configs) as client:
        for accept in ("application/json", "text/html"):
            response = client.get("/status", headers={"Accept": accept})
            assert response.status_code == 404
            assert response.json() == {"message": "Not found", "code": "not_found"}


def test_without_redis_the_page_says_so_and_leaves_out_what_it_cannot_know(
    configs: Path,
) -> None:
    with client_for(configs, show_status_page=True, status_timeout=2.0) as client:
        body = client.get("/status").json()
        assert body["overall"] == "down"
        assert body["redis"]["status"] == "down"
        assert body["redis"]["error"] == "connection refused"
        assert body["workers"]["status"] == "unknown"
        assert body["queues"] == {"inference": None}
        assert body["jobs"] == {}
        assert body["servers"][SERVER]["status"] == "unknown"  # no statusUri
        assert body["models"][MODEL]["status"] == "unknown"
        html = client.get("/status", headers={"Accept": "text/html"})
        assert html.headers["content-type"].startswith("text/html")
        assert "Redis: connection refused" in html.text
        assert client.get("/status?format=html").headers["content-type"].startswith("text/html")
        assert SECRET not in html.text + json.dumps(body)


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("ZHIVA_SHOW_STATUS_PAGE", "true", True),
        ("ZHIVA_SHOW_STATUS_PAGE", "TRUE", True),
        ("zhiva_show_status_page", "True", True),
        ("MODEL_PROXY_SHOW_STATUS_PAGE", "true", True),
        ("ZHIVA_SHOW_STATUS_PAGE", "false", False),
        ("ZHIVA_SHOW_STATUS_PAGE", "", False),
        ("SHOW_STATUS_PAGE", "true", False),
    ],
)
def test_either_variable_turns_the_page_on(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, shown: bool
) -> None:
    for name in ("ZHIVA_SHOW_STATUS_PAGE", "MODEL_PROXY_SHOW_STATUS_PAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    assert Settings().show_status_page is shown
    assert Settings(show_status_page=True).show_status_page is True
