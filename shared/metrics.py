"""Metrics that every process adds to, kept in Redis so that one ``/metrics`` shows them all.

Workers run on many machines; a Prometheus scrape of the API alone would miss them. So every
process adds its counts and durations to Redis hashes (one ``HINCRBYFLOAT`` each), and the API
renders the totals in the Prometheus text format. A label set is stored as a hash field, its
values joined by a separator that label values never contain.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis

__all__ = [
    "BUCKETS",
    "COUNTERS",
    "HISTOGRAMS",
    "MetricSpec",
    "Metrics",
    "bucket_field",
    "counter_key",
    "histogram_key",
    "label_field",
    "parse_label_field",
]

log = logging.getLogger(__name__)

_SEPARATOR = "\x1f"
BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    help: str
    labels: tuple[str, ...]


def _by_name(*specs: MetricSpec) -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in specs}


COUNTERS: dict[str, MetricSpec] = _by_name(
    MetricSpec(
        "requests",
        "Viewer requests by route, model, server and HTTP status",
        ("route", "model", "server", "status"),
    ),
    MetricSpec(
        "jobs", "Finished jobs by model, server and outcome", ("model", "server", "outcome")
    ),
    MetricSpec("bytes_fetched", "DICOM bytes retrieved from each PACS", ("server",)),
    MetricSpec("instances_fetched", "DICOM instances retrieved from each PACS", ("server",)),
    MetricSpec("cache_hits", "Requests answered from a stored result", ("model",)),
    MetricSpec("shared_jobs", "Requests that attached to an identical running job", ("model",)),
    MetricSpec(
        "token_requests",
        "Calls to token servers by kind and outcome",
        ("server", "kind", "outcome"),
    ),
    MetricSpec(
        "audit_failures",
        "Audit lines that could not be written, by event (the access was answered 503)",
        ("event",),
    ),
)
HISTOGRAMS: dict[str, MetricSpec] = _by_name(
    MetricSpec(
        "stage_seconds",
        "Seconds per job stage: queue_wait, fetch, encode, model_call, total",
        ("stage", "model"),
    ),
)


def label_field(values: Sequence[str]) -> str:
    return _SEPARATOR.join(value.replace(_SEPARATOR, " ") for value in values)


def parse_label_field(field: str) -> list[str]:
    return field.split(_SEPARATOR)


def bucket_field(values: Sequence[str], bucket: str) -> str:
    """A histogram's hash field: its labels and ``le`` bucket (``+Inf``, ``sum`` or ``count``)."""
    return label_field([*values, bucket])


def counter_key(prefix: str, name: str) -> str:
    return f"{prefix}:metrics:counter:{name}"


def histogram_key(prefix: str, name: str) -> str:
    return f"{prefix}:metrics:histogram:{name}"


def _values(spec: MetricSpec, labels: Mapping[str, str]) -> list[str]:
    return [str(labels.get(label, "")) for label in spec.labels]


class Metrics:
    """Adds to the shared metrics from a synchronous process (the workers)."""

    def __init__(self, client: redis.Redis, prefix: str = "model-proxy") -> None:
        self._redis = client
        self._prefix = prefix

    def inc(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        field = label_field(_values(COUNTERS[name], labels))
        self._safely(
            lambda: self._redis.hincrbyfloat(counter_key(self._prefix, name), field, amount)
        )

    def observe(self, name: str, labels: Mapping[str, str], seconds: float) -> None:
        values = _values(HISTOGRAMS[name], labels)
        index = bisect.bisect_left(BUCKETS, seconds)
        bucket = str(BUCKETS[index]) if index < len(BUCKETS) else "+Inf"
        key = histogram_key(self._prefix, name)

        def write() -> None:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrbyfloat(key, bucket_field(values, bucket), 1)
                pipe.hincrbyfloat(key, bucket_field(values, "sum"), seconds)
                pipe.hincrbyfloat(key, bucket_field(values, "count"), 1)
                pipe.execute()

        self._safely(write)

    def _safely(self, write: Callable[[], object]) -> None:
        """Metrics never fail a job: a lost increment is logged and forgotten."""
        try:
            write()
        except redis.exceptions.RedisError as exc:
            log.debug("metrics: not recorded (%s)", type(exc).__name__)
