"""``/metrics``: the API's and every worker's numbers, in the Prometheus text format."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.deployment import Ids, PacsData

pytestmark = pytest.mark.integration


def samples(api: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in found.get(name, []) if labels.items() <= got.items())


def test_a_job_shows_in_the_metrics_of_the_api_and_of_the_worker(
    api: TestClient, pacs: PacsData
) -> None:
    item = pacs.series_b[0]
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
    before = samples(api)

    assert api.get(url).status_code == 200
    assert api.get(url, headers={"Cache-Control": ""}).status_code == 200  # from the cache
    model = {"model": Ids.SEGMENTATION}
    # The worker counts a job once it has written the result that answered the viewer, so its
    # numbers reach Redis a moment after the answer: a scrape shows them soon, not at once.
    last = {"stage": "total", **model}  # the last number the worker writes for a job
    deadline = time.monotonic() + 10
    while True:
        after = samples(api)
        counted = value(after, "model_proxy_stage_seconds_count", **last)
        if counted > value(before, "model_proxy_stage_seconds_count", **last):
            break
        assert time.monotonic() < deadline, "the worker's numbers never reached /metrics"
        time.sleep(0.1)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        grew("model_proxy_requests_total", route="segmentations:series", status="200", **model) == 2
    )
    # recorded by the worker process, read by the API from Redis
    assert grew("model_proxy_jobs_total", outcome="succeeded", **model) == 1
    assert grew("model_proxy_instances_fetched_total", server=Ids.PACS) == len(pacs.series_b)
    assert grew("model_proxy_bytes_fetched_total", server=Ids.PACS) >= sum(
        len(i.data) for i in pacs.series_b
    )
    assert grew("model_proxy_cache_hits_total", **model) == 1
    for stage in ("queue_wait", "fetch", "encode", "model_call", "total"):
        assert grew("model_proxy_stage_seconds_count", stage=stage, **model) == 1
    assert "model_proxy_queue_depth" in after
    assert value(after, "model_proxy_queue_depth", queue="inference") >= 0


def test_unknown_keys_do_not_become_label_values(api: TestClient, pacs: PacsData) -> None:
    response = api.get(
        f"/segmentations/11111111-2222-4333-8444-555555555555/studies/{pacs.study_uid}"
    )
    assert response.status_code == 404
    found = samples(api)
    models = {labels["model"] for labels, _ in found["model_proxy_requests_total"]}
    assert "11111111-2222-4333-8444-555555555555" not in models
    assert value(found, "model_proxy_requests_total", model="unknown", status="404") >= 1
