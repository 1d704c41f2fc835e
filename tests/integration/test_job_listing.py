"""``/jobs?state=`` on a real Redis: a listing costs a bounded number of Redis commands,
however many jobs there are (each state has its own index; nothing is scanned)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from devtools.redis_server import RedisServer
from model_proxy.broker.app import create_app
from model_proxy.shared.errors import ModelFailed
from model_proxy.shared.jobs import Job, JobKeys, JobState
from model_proxy.shared.jobs.operations import JobOperations
from tests.support.deployment import Deployment
from tests.support.keys import with_keys
from tests.unit.jobs.support import make_job, run_script

pytestmark = pytest.mark.integration

TTL = 3600
FAILED = 20  # the oldest jobs, failed
LIMIT = 10


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own, so that its command counts are this test's alone."""
    server = RedisServer(tmp_path_factory.mktemp("listing-redis"))
    yield server
    server.stop()


def _record_jobs(client: redis.Redis, count: int) -> list[Job]:
    """``count`` jobs as the API records them, the oldest ``FAILED`` failed, the rest queued."""
    operations = JobOperations(JobKeys(), TTL)
    now = time.time()
    jobs = []
    for n in range(count):
        job = make_job(study_uid=f"1.2.3.{n}").model_copy(update={"created_at": now - count + n})
        run_script(client, operations.create_or_attach(job, use_cached=False))
        jobs.append(job)
    for job in jobs[:FAILED]:
        error = ModelFailed("model m answered HTTP 500", status=500)
        run_script(client, operations.terminate(job, JobState.FAILED, error))
    return jobs


def _commands(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


@pytest.mark.parametrize("count", [200, 3000])
def test_listing_one_state_costs_the_same_few_commands_however_many_jobs(
    deployment: Deployment, private_redis: RedisServer, tmp_path: Path, count: int
) -> None:
    client = private_redis.client()
    client.flushall()
    jobs = _record_jobs(client, count)
    settings, headers = with_keys(
        deployment.settings.model_copy(update={"redis_url": private_redis.url}),
        tmp_path,
        ops="admin",  # an admin lists every job
    )
    with TestClient(create_app(settings, environ=deployment.environ)) as api:
        client.config_resetstat()
        response = api.get(f"/jobs?state=failed&limit={LIMIT}", headers=headers["ops"])
        used = _commands(client)

    assert response.status_code == 200, response.text
    listed = [job["id"] for job in response.json()["jobs"]]
    assert listed == [job.id for job in reversed(jobs[FAILED - LIMIT : FAILED])]
    assert used.get("hgetall", 0) == LIMIT  # the records listed, and no others
    job_reads = {"hgetall", "hget", "hmget", "zrange", "zrevrange", "zrangebyscore", "scan"}
    assert sum(used.get(name, 0) for name in job_reads) <= LIMIT + 1
    client.close()
