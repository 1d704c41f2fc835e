"""Answers stored gzipped and served as stored, on the real stack: a worker process on the
session's Redis and Orthanc, and a model that answers a known segmentation-like document
(encoded once more as a JSON string, as zhiva's models do: the worker unwraps it)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from model_proxy.broker.app import create_app
from model_proxy.shared.jobs import JobKeys
from tests.support.deployment import Deployment, PacsData, own_api_and_worker
from tests.support.served import serve

pytestmark = pytest.mark.integration

MASK = "2d1f3a4b-5555-4c6d-8e7f-000000000001"
CAPPED = "2d1f3a4b-5555-4c6d-8e7f-000000000002"
GZIP = {"Accept-Encoding": "gzip, deflate, br"}  # as browsers ask
IDENTITY = {"Accept-Encoding": "identity"}
FROM_CACHE = {"Cache-Control": ""}  # the session client asks for fresh runs otherwise


def _document() -> bytes:
    """About 200 kB of JSON: 0/1 masks, runs with some noise, as thresholded CT gives."""
    rows = []
    for row in range(96):
        rows.append([1 if 20 < col < 90 or (row * col) % 37 == 0 else 0 for col in range(128)])
    frame = {"segments": [{"points": rows, "color": "#f00"}]}
    frames = {f"1.2.826.0.1.{i}": frame for i in range(8)}
    return json.dumps({"1.2.3": {"1.2.3.4": frames}}, separators=(",", ":")).encode()


DOCUMENT = _document()


async def _answer(request: Request) -> Response:
    await request.body()
    return Response(json.dumps(DOCUMENT.decode()), media_type="application/json")


@dataclass(frozen=True)
class Stack:
    viewer: TestClient  # the session's style of client: a fresh run per request
    audited: TestClient  # another API on the same Redis, its audit log in ``audit_log``
    audit_log: Path
    keys: JobKeys
    deployment: Deployment


@pytest.fixture(scope="module")
def stack(deployment: Deployment) -> Iterator[Stack]:
    here = deployment.workdir / "compressed-answers"
    here.mkdir()
    with serve(Starlette(routes=[Route("/infer", _answer, methods=["POST"])]), "mask") as url:
        model = {"uri": f"{url}/infer", "task": "segmentation", "supports": ["/studies/series"]}
        # the cap is on the answer as the model sends it, larger than it is stored
        models = {MASK: model, CAPPED: {**model, "maxAnswerBytes": len(DOCUMENT) // 2}}
        with own_api_and_worker(deployment, here, "compressed", models=models) as viewer:
            settings = viewer.app.state.services.settings  # type: ignore[attr-defined]
            audit_log = here / "audit.log"
            app = create_app(
                settings.model_copy(update={"audit_log": audit_log}), environ=deployment.environ
            )
            with TestClient(app) as audited:
                yield Stack(viewer, audited, audit_log, JobKeys(settings.redis_prefix), deployment)


def _path(pacs: PacsData, model: str = MASK) -> str:
    item = pacs.series_a[0]
    return f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}"


def _raw(client: TestClient, path: str, headers: dict[str, str]) -> tuple[Any, bytes]:
    """The response and its body as it came over the wire (not decoded)."""
    with client.stream("GET", path, headers=headers) as response:
        return response, b"".join(response.iter_raw())


def test_gzip_for_a_browser_and_plain_json_for_others_both_what_the_model_answered(
    stack: Stack, pacs: PacsData
) -> None:
    fresh, zipped = _raw(stack.viewer, _path(pacs), GZIP)
    assert fresh.status_code == 200
    assert fresh.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in fresh.headers["vary"]
    assert int(fresh.headers["content-length"]) == len(zipped) < len(DOCUMENT) // 10
    job_id = fresh.headers["x-job-id"]

    plain, body = _raw(stack.viewer, _path(pacs), {**IDENTITY, **FROM_CACHE})
    assert plain.status_code == 200 and plain.headers["x-job-id"] == job_id  # the stored answer
    assert "content-encoding" not in plain.headers
    assert "Accept-Encoding" in plain.headers["vary"]
    assert int(plain.headers["content-length"]) == len(body)
    assert gzip.decompress(zipped) == body == DOCUMENT

    for headers in (GZIP, IDENTITY):
        result, raw = _raw(stack.viewer, f"/jobs/{job_id}/result", headers)
        assert result.status_code == 200
        gzipped = result.headers.get("content-encoding") == "gzip"
        assert gzipped is (headers is GZIP)
        assert (gzip.decompress(raw) if gzipped else raw) == DOCUMENT

    stored = stack.deployment.redis.client().get(stack.keys.result(job_id))
    assert stored is not None and len(stored) < len(DOCUMENT) // 10  # Redis holds it gzipped


def test_etag_and_304_on_the_viewer_route_and_the_job_result(stack: Stack, pacs: PacsData) -> None:
    first = stack.viewer.get(_path(pacs), headers=GZIP)
    job_id, etag = first.headers["x-job-id"], first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('-gzip"')
    plain_etag = stack.viewer.get(_path(pacs), headers={**IDENTITY, **FROM_CACHE}).headers["etag"]
    assert plain_etag != etag  # another representation, another tag

    for client in (stack.viewer, stack.audited):
        for path in (_path(pacs), f"/jobs/{job_id}/result"):
            headers = {**GZIP, **FROM_CACHE, "If-None-Match": etag}
            again = client.get(path, headers=headers)
            assert again.status_code == 304, path
            assert again.content == b""
            assert again.headers["etag"] == etag
            assert "Accept-Encoding" in again.headers["vary"]
            other = client.get(path, headers={**GZIP, **FROM_CACHE, "If-None-Match": '"other"'})
            assert other.status_code == 200 and other.content == DOCUMENT
            assert other.headers["etag"] == etag
    no_gzip = stack.viewer.get(
        f"/jobs/{job_id}/result", headers={**IDENTITY, "If-None-Match": plain_etag}
    )
    assert no_gzip.status_code == 304 and no_gzip.headers["etag"] == plain_etag

    lines = [json.loads(line) for line in stack.audit_log.read_text().splitlines()]
    statuses = [(line["event"], line["status"]) for line in lines]
    assert statuses.count(("inference", 304)) == 1 and ("inference", 200) in statuses
    assert statuses.count(("job.result", 304)) == 1 and ("job.result", 200) in statuses


def test_an_answer_stored_before_compression_is_still_served(stack: Stack, pacs: PacsData) -> None:
    job_id = stack.viewer.get(_path(pacs)).headers["x-job-id"]
    old = b'{"1.2.3": {"stored": "by an earlier version, as plain JSON"}}'
    redis = stack.deployment.redis.client()
    redis.set(stack.keys.result(job_id), old, keepttl=True)

    for headers in (GZIP, IDENTITY):
        response, raw = _raw(stack.viewer, f"/jobs/{job_id}/result", headers)
        assert response.status_code == 200
        assert "content-encoding" not in response.headers
        assert raw == old
    etag = stack.viewer.get(f"/jobs/{job_id}/result").headers["etag"]
    again = stack.viewer.get(f"/jobs/{job_id}/result", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_the_answer_size_cap_applies_to_the_answer_as_the_model_sent_it(
    stack: Stack, pacs: PacsData
) -> None:
    response = stack.viewer.get(_path(pacs, CAPPED))
    assert response.status_code == 502
    assert response.json()["code"] == "model_answer_too_large"
