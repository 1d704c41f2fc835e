"""The Redis keys of jobs (``shared/jobs/keys.py``)."""

from __future__ import annotations

from model_proxy.shared.jobs import (
    JobKeys,
)
from tests.unit.jobs.support import (
    KEYS,
    MODEL,
)


def test_key_names() -> None:
    assert KEYS.job("abc") == "model-proxy:job:abc"
    assert KEYS.result("abc") == "model-proxy:result:abc"
    assert KEYS.lease("abc") == "model-proxy:lease:abc"
    assert KEYS.events == "model-proxy:job-events"
    assert KEYS.queued(MODEL) == f"model-proxy:queued:{MODEL}"
    assert JobKeys("other").job("abc") == "other:job:abc"
