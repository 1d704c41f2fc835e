"""The workers' retry policy, and which errors of the tree are transient."""

from __future__ import annotations

import pytest

from model_proxy.shared.errors import (
    BadModelResponse,
    DicomNotFound,
    InternalError,
    ModelFailed,
    ModelProxyError,
    ModelTimeout,
    ModelUnreachable,
    PacsAuthFailed,
    PacsFailed,
    PacsTimeout,
    PacsUnreachable,
    QueueUnavailable,
    UnknownModel,
    error_from_code,
    is_transient,
)
from model_proxy.shared.settings import Settings
from model_proxy.workers.retry import RetryPolicy

TRANSIENT = ModelUnreachable("model m cannot be reached")


def policy(jitter: float = 1.0, **overrides: float) -> RetryPolicy:
    values: dict[str, float] = {
        "first_delay": 1.0,
        "max_delay": 8.0,
        "total_delay": 100.0,
        "max_attempts": 10,
    }
    values.update(overrides)
    return RetryPolicy(
        first_delay=values["first_delay"],
        max_delay=values["max_delay"],
        total_delay=values["total_delay"],
        max_attempts=int(values["max_attempts"]),
        random=lambda: jitter,
    )


@pytest.mark.parametrize(
    "error",
    [
        PacsUnreachable("server s cannot be reached"),
        ModelUnreachable("model m cannot be reached"),
        QueueUnavailable("Redis cannot be reached"),
        PacsFailed("server s answered HTTP 502", status=502),
        PacsFailed("server s answered HTTP 503", status=503),
        ModelFailed("model m answered HTTP 504", status=504),
    ],
)
def test_refused_connections_gateway_errors_and_redis_blips_are_transient(
    error: ModelProxyError,
) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        PacsFailed("server s answered HTTP 500", status=500),
        ModelFailed("model m answered HTTP 500", status=500),
        ModelFailed("model m answered HTTP 503: a message that says nothing about status"),
        PacsAuthFailed("server s refused access (HTTP 401)"),
        DicomNotFound("the series was not found on server s"),
        BadModelResponse("model m did not answer with JSON"),
        PacsTimeout("server s did not answer in time"),
        ModelTimeout("model m did not answer in time"),
        UnknownModel("no model m"),
        InternalError("unexpected"),
    ],
)
def test_other_errors_are_permanent(error: ModelProxyError) -> None:
    assert not is_transient(error)


def test_foreign_exceptions_are_never_transient() -> None:
    assert not is_transient(ConnectionError("not translated into ours"))


def test_an_error_rebuilt_from_its_code_keeps_its_class_and_so_its_marking() -> None:
    assert is_transient(error_from_code("pacs_unreachable", "server s cannot be reached"))
    assert not is_transient(error_from_code("model_timeout", "too slow"))


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [policy().backoff(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy().backoff(10_000) == 8.0


def test_the_longest_wait_adds_the_capped_backoffs_before_jitter() -> None:
    assert policy().longest_wait(0) == 0.0
    assert policy().longest_wait(5) == 1.0 + 2.0 + 4.0 + 8.0 + 8.0


def test_the_jitter_takes_off_at_most_half_of_each_wait() -> None:
    assert policy(jitter=0.0).backoff(2) == 2.0
    assert policy(jitter=0.5).backoff(2) == 3.0


def test_a_permanent_error_is_never_retried() -> None:
    assert policy().delay_before_retry(ModelTimeout("slow"), attempts=1, waited=0.0) is None


def test_a_transient_error_is_retried_after_the_backoff_of_its_attempt() -> None:
    assert policy().delay_before_retry(TRANSIENT, attempts=1, waited=0.0) == 1.0
    assert policy().delay_before_retry(TRANSIENT, attempts=3, waited=3.0) == 4.0


def test_no_retry_after_the_last_attempt() -> None:
    assert policy(max_attempts=3).delay_before_retry(TRANSIENT, attempts=2, waited=0.0) == 2.0
    assert policy(max_attempts=3).delay_before_retry(TRANSIENT, attempts=3, waited=0.0) is None


def test_no_retry_whose_wait_would_pass_the_total_cap() -> None:
    capped = policy(total_delay=6.0)
    assert capped.delay_before_retry(TRANSIENT, attempts=2, waited=4.0) == 2.0
    assert capped.delay_before_retry(TRANSIENT, attempts=3, waited=6.0) is None


def test_no_retry_that_would_start_past_the_deadline() -> None:
    assert policy().delay_before_retry(TRANSIENT, attempts=1, waited=0.0, time_left=1.5) == 1.0
    assert policy().delay_before_retry(TRANSIENT, attempts=1, waited=0.0, time_left=1.0) is None
    assert policy().delay_before_retry(TRANSIENT, attempts=1, waited=0.0, time_left=-3) is None


def test_the_policy_comes_from_the_settings() -> None:
    settings = Settings(
        retry_first_delay=0.2, retry_max_delay=3.0, retry_total_delay=9.0, max_attempts=4
    )
    made = RetryPolicy.from_settings(settings)
    assert (made.first_delay, made.max_delay, made.total_delay, made.max_attempts) == (
        0.2,
        3.0,
        9.0,
        4,
    )
