"""The task's error policy: what ``run_inference`` does with what escapes the pipeline.

The pipeline is replaced by a plain function; the task runs in this process through
``Task.apply``, which also runs the retries the task asks for, one after the other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery

from model_proxy.shared.errors import ModelProxyError, QueueUnavailable, UnknownModel
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import DELIVER_WEBHOOKS, RUN_INFERENCE
from model_proxy.workers import app as worker_app
from model_proxy.workers.app import worker_queues
from model_proxy.workers.pipeline import JobRunResult

SETTINGS = Settings(retry_first_delay=0.001, retry_max_delay=0.002, max_attempts=3)


@pytest.fixture(scope="module")
def app() -> Celery:
    """One worker app for the module: Celery shares a task name among the apps of a process."""
    return worker_app.create_worker_app(SETTINGS, "redis://127.0.0.1:1/0")


def worker_with(
    monkeypatch: pytest.MonkeyPatch, app: Celery, run: Callable[[str], JobRunResult]
) -> Celery:
    """The worker app with ``run`` as its pipeline, building no real context."""
    monkeypatch.setattr(worker_app, "build_context", lambda settings, url, **_: object())
    monkeypatch.setattr(worker_app, "run_job", lambda job_id, context, policy: run(job_id))
    monkeypatch.setattr(worker_app, "dispatch_callbacks", lambda context, job_id, send: 0)
    return app


def raising_first(*errors: ModelProxyError) -> tuple[list[str], Callable[[str], JobRunResult]]:
    """A pipeline that raises ``errors`` in turn, then runs the job; and the ids it was given."""
    calls: list[str] = []

    def run(job_id: str) -> JobRunResult:
        calls.append(job_id)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return JobRunResult.DONE

    return calls, run


def apply(app: Celery, job_id: str) -> Any:
    return app.tasks[RUN_INFERENCE].apply(args=[job_id])


def test_redis_away_before_the_claim_sends_the_task_back_until_it_works(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    calls, run = raising_first(QueueUnavailable("Redis cannot be reached"))

    result = apply(worker_with(monkeypatch, app, run), "job-1")

    assert result.successful()
    assert calls == ["job-1", "job-1"]


def test_a_transient_error_is_retried_at_most_max_attempts_times_in_all(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    blip = QueueUnavailable("Redis cannot be reached")
    calls, run = raising_first(blip, blip, blip, blip)

    result = apply(worker_with(monkeypatch, app, run), "job-1")

    assert result.failed()
    assert isinstance(result.result, QueueUnavailable)
    assert len(calls) == SETTINGS.max_attempts


def test_a_permanent_error_is_not_retried(monkeypatch: pytest.MonkeyPatch, app: Celery) -> None:
    calls, run = raising_first(UnknownModel("no model m"))

    result = apply(worker_with(monkeypatch, app, run), "job-1")

    assert result.failed()
    assert calls == ["job-1"]


def test_a_job_handed_back_by_a_stopping_worker_is_published_again(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    calls: list[str] = []

    def run(job_id: str) -> JobRunResult:
        calls.append(job_id)
        return JobRunResult.HANDED_BACK if len(calls) == 1 else JobRunResult.DONE

    result = apply(worker_with(monkeypatch, app, run), "job-1")

    assert result.successful()
    assert calls == ["job-1", "job-1"]


def test_a_run_that_is_done_queues_the_jobs_webhooks_and_one_deferred_does_not(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    results = [JobRunResult.DEFERRED, JobRunResult.DONE]
    worker_with(monkeypatch, app, lambda job_id: results.pop(0))
    dispatched: list[str] = []
    monkeypatch.setattr(
        worker_app,
        "dispatch_callbacks",
        lambda context, job_id, send: dispatched.append(job_id) or 1,
    )

    result = apply(app, "job-1")

    assert result.successful()
    assert dispatched == ["job-1"]  # once: after the run that ended it


def dispatching(
    monkeypatch: pytest.MonkeyPatch, app: Celery, dispatch: Callable[..., int], **kwargs: Any
) -> Any:
    """``run_inference`` of a job that ends, its webhooks queued by ``dispatch``."""
    worker_with(monkeypatch, app, lambda job_id: JobRunResult.DONE)
    monkeypatch.setattr(worker_app, "dispatch_callbacks", dispatch)
    return app.tasks[RUN_INFERENCE].apply(args=["job-1"], kwargs=kwargs)


def test_webhooks_the_broker_refused_are_queued_by_the_task_coming_back(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    sends: list[str] = []

    def dispatch(context: object, job_id: str, send: object) -> int:
        sends.append(job_id)
        if len(sends) == 1:  # the broker refuses the first time
            raise QueueUnavailable("1 webhooks of job job-1 not queued")
        return 1

    assert dispatching(monkeypatch, app, dispatch).successful()
    assert sends == ["job-1", "job-1"]  # the task came back and queued it


def test_queuing_webhooks_is_given_up_after_the_webhook_retry_window(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    sends: list[float] = []

    def refuse(context: object, job_id: str, send: object) -> int:
        sends.append(time.time())
        raise QueueUnavailable("broker away")

    started = time.time() - SETTINGS.webhook_retry_seconds  # refused since the window began
    since = {"webhook_retries": 3, "dispatching_since": started}

    assert dispatching(monkeypatch, app, refuse, **since).successful()  # given up: acked
    assert len(sends) == 1


def test_deliveries_go_to_the_webhook_queue_not_the_inference_queue(
    monkeypatch: pytest.MonkeyPatch, app: Celery
) -> None:
    queued: list[tuple[str, Any]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: queued.append((name, kw["queue"])))

    def dispatch(context: object, job_id: str, send: Callable[[str, str, str, int], None]) -> int:
        send(job_id, "cid-1", "1.5", 1)
        return 1

    assert dispatching(monkeypatch, app, dispatch).successful()
    assert queued == [(DELIVER_WEBHOOKS, SETTINGS.webhook_queue)]
    assert SETTINGS.webhook_queue == "model-proxy-webhooks"


def test_every_worker_consumes_the_webhook_queue_besides_its_own() -> None:
    assert worker_queues(SETTINGS, ["gpu"]) == ["gpu", "model-proxy-webhooks"]
    assert worker_queues(SETTINGS, [" gpu", "", "model-proxy-webhooks"]) == [
        "gpu",
        "model-proxy-webhooks",
    ]
    own = SETTINGS.model_copy(update={"webhook_queue": "hooks"})
    assert worker_queues(own, ["model-proxy", "cpu"]) == ["model-proxy", "cpu", "hooks"]
