"""Which web pages and host names the API answers, on a real server (uvicorn on loopback) with
the session's Redis: another site's page cannot make jobs nor use up the anonymous quota, a
DNS-rebound name is refused, the probes answer anyone, and each refusal has its audit line."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings
from tests.support.deployment import Deployment, Ids, PacsData
from tests.support.served import serve

pytestmark = pytest.mark.integration

LIMIT = 3  # MODEL_PROXY_MAX_QUEUED_PER_CLIENT here
EVIL = "https://evil.example"


@dataclass
class Site:
    url: str
    port: int
    jobs: redis.Redis  # the session's Redis
    index: str  # the sorted set of every job of this site's prefix
    audit: Path

    def job_count(self) -> int:
        return int(self.jobs.zcard(self.index))

    def audit_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


@pytest.fixture()
def site(deployment: Deployment, tmp_path: Path) -> Iterator[Site]:
    """The API with the default host names, its own Redis prefix (its jobs are counted alone;
    no worker reads its queue, so they stay queued) and its audit log in ``tmp_path``."""
    prefix = f"web-pages-{uuid.uuid4().hex[:8]}"
    settings = deployment.settings.model_copy(
        update={
            "allowed_hosts": Settings.model_fields["allowed_hosts"].default,
            "redis_prefix": prefix,
            "max_queued_per_client": LIMIT,
            "anonymous": "viewer",
            "api_keys_file": tmp_path / "api-keys.json",
            "audit_log": str(tmp_path / "audit.log"),
        }
    )
    client = redis.Redis.from_url(deployment.redis.url)
    with serve(create_app(settings, environ=deployment.environ), "web-pages-api") as url:
        port = int(url.rsplit(":", 1)[1])
        yield Site(url, port, client, f"{prefix}:jobs", tmp_path / "audit.log")
    client.close()


def _viewer_url(site: Site, pacs: PacsData) -> str:
    item = pacs.ct_small
    return (
        f"{site.url}/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}"
        f"/series/{item.series_uid}"
    )


def test_another_sites_page_makes_no_job_and_leaves_the_quota_to_the_viewer(
    site: Site, pacs: PacsData
) -> None:
    url = _viewer_url(site, pacs)
    foreign = [{"Origin": EVIL}] * (LIMIT + 1) + [{"Sec-Fetch-Site": "cross-site"}]
    for headers in foreign:
        answer = requests.get(url, headers={"Prefer": "respond-async", **headers}, timeout=10)
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in answer.headers
    assert site.job_count() == 0

    viewer = "https://alpha.zhiva.ai"
    answer = requests.get(
        url,
        headers={"Prefer": "respond-async", "Origin": viewer, "Sec-Fetch-Site": "cross-site"},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers["access-control-allow-origin"] == viewer
    assert site.job_count() == 1

    lines = site.audit_lines()
    assert [(line["status"], line["error"]) for line in lines] == [
        (403, "origin_not_allowed")
    ] * len(foreign) + [(202, None)]
    # what the refused requests asked for is recorded, the default server included
    assert all(line["server"] == Ids.PACS for line in lines)
    assert all(line["study"] == pacs.ct_small.study_uid for line in lines)


def test_a_dns_rebound_name_is_refused_and_the_probes_answer_any_host(
    site: Site, pacs: PacsData
) -> None:
    rebound = {"Host": f"attacker.example:{site.port}"}  # same-origin: no Origin header
    for url in (_viewer_url(site, pacs), f"{site.url}/jobs/{'0' * 32}"):
        answer = requests.get(url, headers={"Prefer": "respond-async", **rebound}, timeout=10)
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "host_not_allowed"
        assert "MODEL_PROXY_ALLOWED_HOSTS" in answer.json()["message"]
    assert site.job_count() == 0
    for probe in ("/healthz", "/readyz"):
        answer = requests.get(f"{site.url}{probe}", headers=rebound, timeout=10)
        assert answer.status_code == 200, probe
    for host in (f"localhost:{site.port}", f"127.0.0.1:{site.port}"):
        answer = requests.get(f"{site.url}/jobs/{'0' * 32}", headers={"Host": host}, timeout=10)
        assert answer.json()["code"] == "unknown_job", host
    assert [line["error"] for line in site.audit_lines()] == [
        "host_not_allowed",
        "host_not_allowed",
        "unknown_job",
        "unknown_job",
    ]
