"""Jobs belong to who asked, on the real stack: two viewer keys and an admin key, anonymous
access refused. Each viewer lists its own jobs and cannot cancel the other's out from under it;
a job both asked for runs on until both have left; the admin sees and cancels all; a viewer's
waiting jobs are capped; ``/status`` and ``/metrics`` are the admin's."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, Ids, PacsData
from tests.support.keys import with_keys
from tests.support.served import serve

pytestmark = pytest.mark.integration

PARKED = "b0000000-0000-4000-8000-0000000000aa"  # on a queue no worker reads: jobs stay queued
LIMIT = 3  # MODEL_PROXY_MAX_QUEUED_PER_CLIENT here


@dataclass
class Site:
    api: TestClient
    headers: dict[str, dict[str, str]]  # "a" and "b" (viewers), "admin"
    names: dict[str, str]
    settings: Any
    environ: dict[str, str]

    def ask(self, who: str, url: str, **headers: str) -> Any:
        return self.api.get(
            url, headers={"Prefer": "respond-async", **self.headers[who], **headers}
        )

    def listed(self, who: str, **params: str) -> list[str]:
        answer = self.api.get("/jobs", params=params, headers=self.headers[who])
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()["jobs"]]

    def job(self, who: str, job_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/jobs/{job_id}", headers=self.headers[who])
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def cancel(self, who: str, job_id: str) -> Any:
        return self.api.delete(f"/jobs/{job_id}", headers=self.headers[who])


def parked(item: Any) -> str:
    """A request for ``item`` (one instance) of the model whose jobs nobody runs."""
    return (
        f"/segmentations/{PARKED}/studies/{item.study_uid}/series/{item.series_uid}"
        f"/instances/{item.sop_uid}"
    )


@pytest.fixture(scope="module")
def models_file(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    here = tmp_path_factory.mktemp("owners")
    models = json.loads(deployment.settings.models_file.read_text())
    models[PARKED] = {
        "uri": f"{deployment.model_url}/segmentation",
        "task": "segmentation",
        "supports": ["/studies", "/studies/series", "/studies/series/instances"],
        "queue": "owners-parked",
    }
    (here / "models.json").write_text(json.dumps(models))
    return here / "models.json"


@pytest.fixture()
def site(
    deployment: Deployment, worker: ManagedProcess, models_file: Path, tmp_path: Path
) -> Iterator[Site]:
    """The API with anonymous access refused, and keys whose names are this test's own."""
    tag = uuid.uuid4().hex[:8]
    names = {"a": f"ward-a-{tag}", "b": f"ward-b-{tag}", "admin": f"ops-{tag}"}
    base = deployment.settings.model_copy(
        update={
            "models_file": models_file,
            "anonymous": "none",
            "max_queued_per_client": LIMIT,
            "local_cache_seconds": 0.0,
        }
    )
    settings, keyed = with_keys(
        base, tmp_path, **{names["a"]: "viewer", names["b"]: "viewer", names["admin"]: "admin"}
    )
    headers = {who: keyed[name] for who, name in names.items()}
    environ = {**deployment.environ, "MODEL_PROXY_MODELS_FILE": str(models_file)}
    with TestClient(create_app(settings, environ=environ)) as api:
        here = Site(api, headers, names, settings, environ)
        yield here
        for job_id in here.listed("admin", state="queued", limit="500"):  # leave nothing queued
            if here.job("admin", job_id)["request"]["model"] == PARKED:
                here.cancel("admin", job_id)


def test_each_viewer_lists_only_its_own_jobs_and_the_admin_sees_all(
    site: Site, pacs: PacsData
) -> None:
    first = site.ask("a", parked(pacs.series_a[0])).json()["id"]
    second = site.ask("b", parked(pacs.series_a[1])).json()["id"]

    assert site.listed("a") == [first]
    assert site.listed("b") == [second]
    assert site.listed("a", state="queued") == [first]
    assert site.listed("a", state="cancelled") == []
    assert {first, second} <= set(site.listed("admin", state="queued"))


def test_who_asked_is_shown_to_an_admin_only(site: Site, pacs: PacsData) -> None:
    job_id = site.ask("a", parked(pacs.series_a[0])).json()["id"]

    assert site.job("admin", job_id)["requestedBy"] == [site.names["a"]]
    for who in ("a", "b"):  # whoever holds the id sees the job, not who asked for it
        assert "requestedBy" not in site.job(who, job_id)
    listing = site.api.get("/jobs", headers=site.headers["a"]).json()["jobs"]
    assert "requestedBy" not in listing[0]


def test_a_viewer_cannot_cancel_anothers_job(site: Site, pacs: PacsData) -> None:
    job_id = site.ask("a", parked(pacs.series_a[0])).json()["id"]

    refused = site.cancel("b", job_id)

    assert refused.status_code == 403
    assert refused.json()["code"] == "not_your_job"
    assert site.job("a", job_id)["state"] == "queued"


def test_a_job_both_asked_for_runs_on_until_both_cancel(site: Site, pacs: PacsData) -> None:
    url = parked(pacs.series_a[0])
    job_id = site.ask("a", url).json()["id"]
    assert site.ask("b", url).json()["id"] == job_id

    left = site.cancel("a", job_id)

    assert left.status_code == 200
    assert left.json()["state"] == "queued"  # only detached: b still waits
    assert site.job("admin", job_id)["requestedBy"] == [site.names["b"]]
    assert job_id in site.listed("a")  # it still lists what it asked for
    assert site.cancel("a", job_id).json()["state"] == "queued"  # leaving twice changes nothing
    last = site.cancel("b", job_id)
    assert last.status_code == 200
    assert last.json()["state"] == "cancelled"
    assert site.cancel("b", job_id).status_code == 409


def test_the_admin_cancels_any_job_at_once(site: Site, pacs: PacsData) -> None:
    url = parked(pacs.series_a[0])
    job_id = site.ask("a", url).json()["id"]
    site.ask("b", url)

    cancelled = site.cancel("admin", job_id)

    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["requestedBy"] == sorted([site.names["a"], site.names["b"]])


def test_anonymous_callers_get_no_listing_but_hold_job_ids(api: TestClient, pacs: PacsData) -> None:
    item = pacs.ct_small
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
    job_id = api.get(url, headers={"Prefer": "respond-async"}).json()["id"]

    listing = api.get("/jobs")

    assert listing.status_code == 401
    assert listing.json()["code"] == "unauthenticated"
    assert listing.headers["www-authenticate"] == "Bearer"
    assert api.get(f"/jobs/{job_id}").status_code == 200
    assert "requestedBy" not in api.get(f"/jobs/{job_id}").json()


def test_past_its_quota_a_viewer_gets_429_while_another_gets_through(
    site: Site, pacs: PacsData
) -> None:
    items = pacs.series_a[:LIMIT]
    ids = [site.ask("a", parked(item)).json()["id"] for item in items]
    assert len(set(ids)) == LIMIT
    other = parked(pacs.series_a[LIMIT])

    refused = site.ask("a", other)

    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_jobs"
    assert int(refused.headers["retry-after"]) > 0
    assert site.ask("b", other).status_code == 202  # another key still gets through
    assert site.ask("a", parked(items[0])).json()["id"] == ids[0]  # its own: not counted twice
    assert site.ask("a", other).status_code == 429  # joining b's job is one more job
    assert site.cancel("a", ids[0]).json()["state"] == "cancelled"
    assert site.ask("a", other).status_code == 202  # a place is free again


def test_status_and_metrics_are_the_admins_when_anonymous_access_is_refused(
    site: Site,
) -> None:
    for path in ("/status", "/metrics"):
        refused = site.api.get(path, headers=site.headers["a"])
        assert refused.status_code == 403, path
        assert refused.json()["code"] == "admin_required"
        assert site.api.get(path).status_code == 401
    assert site.api.get("/metrics", headers=site.headers["admin"]).status_code == 200


def test_status_and_metrics_stay_open_with_anonymous_viewers(api: TestClient) -> None:
    assert api.get("/metrics").status_code == 200


def test_a_cached_answer_is_listed_by_the_named_caller_it_answered(
    site: Site, pacs: PacsData
) -> None:
    item = pacs.mr_small
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
    made = site.api.get(url, headers={"Cache-Control": "no-cache", **site.headers["a"]})
    assert made.status_code == 200, made.text
    job_id = made.headers["x-job-id"]

    cached = site.api.get(url, headers=site.headers["b"])

    assert cached.status_code == 200
    assert cached.headers["x-job-id"] == job_id
    assert site.listed("b") == [job_id]
    assert site.job("admin", job_id)["requestedBy"] == [site.names["a"]]  # it did not ask


def _hang_up_while_waiting(site: Site, base_url: str, path: str, who: str) -> str:
    """A viewer's synchronous GET whose client goes away before the answer, once the job it
    asked for is listed as ``who``'s; that job's id."""
    before = set(site.listed(who))
    host, port = base_url.removeprefix("http://").split(":")
    headers = site.headers[who]
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + 30
        while not (made := [job for job in site.listed(who) if job not in before]):
            assert time.monotonic() < deadline, "the request never made its job"
            time.sleep(0.05)
    return made[0]


def test_a_waiting_viewer_that_goes_away_leaves_its_job_running(site: Site, pacs: PacsData) -> None:
    request = parked(pacs.series_b[0])
    with serve(create_app(site.settings, environ=site.environ), "owners-api") as base_url:
        job_id = _hang_up_while_waiting(site, base_url, request, "a")
        time.sleep(2.5)  # the API has seen the client go (it checks every second)

        # a dropped connection is not a cancel: the job still waits for a worker, for a,
        job = site.job("admin", job_id)
        assert job["state"] == "queued"
        assert job["requestedBy"] == [site.names["a"]]
        # and a's next ask finds that same job
        assert site.ask("a", request).json()["id"] == job_id
        assert site.cancel("a", job_id).json()["state"] == "cancelled"


def test_only_a_requester_or_an_admin_stores_a_jobs_objects_again(
    site: Site, pacs: PacsData
) -> None:
    item = pacs.series_a[2]
    url = (
        f"/segmentations/{Ids.SEG_STORE_REFUSED}/studies/{item.study_uid}"
        f"/series/{item.series_uid}/instances/{item.sop_uid}"
    )
    job_id = site.ask("a", url).json()["id"]
    deadline = time.monotonic() + 15
    while site.job("a", job_id)["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    refused = site.api.post(f"/jobs/{job_id}/store", headers=site.headers["b"])
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_your_job"
    for who in ("a", "admin"):
        response = site.api.post(f"/jobs/{job_id}/store", headers=site.headers[who])
        assert response.status_code == 202, response.text
