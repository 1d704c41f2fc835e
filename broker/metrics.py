"""``/metrics``: every process's counts and durations from Redis, in the Prometheus format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from model_proxy.broker.background import BackgroundTask
from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.broker.queue_depth import queue_depths
from model_proxy.shared.jobs.operations import text
from model_proxy.shared.metrics import (
    BUCKETS,
    COUNTERS,
    HISTOGRAMS,
    counter_key,
    histogram_key,
    label_field,
    parse_label_field,
)

__all__ = ["AsyncMetrics", "render_metrics"]

log = logging.getLogger(__name__)
_NAMESPACE = "model_proxy"


class AsyncMetrics:
    """Adds to the shared metrics from the API's event loop.

    Counts are kept in memory and written to Redis in one pipeline every ``interval`` seconds
    (and at shutdown), so that counting costs a request no round trip to Redis.
    """

    def __init__(
        self, client: aioredis.Redis, prefix: str = "model-proxy", interval: float = 1.0
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._interval = interval
        self._pending: dict[tuple[str, str], float] = {}
        self._flusher = BackgroundTask("metrics-flush", self._flush_every)

    def add(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        spec = COUNTERS[name]
        field = label_field([str(labels.get(label, "")) for label in spec.labels])
        key = (counter_key(self._prefix, name), field)
        self._pending[key] = self._pending.get(key, 0.0) + amount

    async def start(self) -> None:
        self._flusher.start()

    async def stop(self) -> None:
        await self._flusher.stop()
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (key, field), amount in pending.items():
                    pipe.hincrbyfloat(key, field, amount)
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.debug("metrics: %d counts not recorded (%s)", len(pending), type(exc).__name__)

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


async def render_metrics(
    jobs: AsyncJobStore,
    queues: Iterable[str],
    models: Iterable[str],
    transport_options: Mapping[str, Any],
) -> bytes:
    """The Prometheus text of all counters, histograms and the current queue depths."""
    client, prefix = jobs.redis, jobs.keys.prefix
    families: list[Metric] = []
    for name, spec in COUNTERS.items():
        family = CounterMetricFamily(f"{_NAMESPACE}_{name}", spec.help, labels=spec.labels)
        stored = await client.hgetall(counter_key(prefix, name))
        for field, value in sorted(stored.items()):
            family.add_metric(parse_label_field(text(field)), float(value))
        families.append(family)
    for name, spec in HISTOGRAMS.items():
        families.append(await _histogram(client, prefix, name, spec.help, spec.labels))
    depth = GaugeMetricFamily(
        f"{_NAMESPACE}_queue_depth", "Tasks waiting in each Celery queue", labels=("queue",)
    )
    depths = await queue_depths(client, sorted(set(queues)), transport_options)
    for queue, count in depths.items():
        depth.add_metric([queue], float(count))
    families.append(depth)
    waiting = GaugeMetricFamily(
        f"{_NAMESPACE}_jobs_queued", "Jobs of each model waiting for a worker", labels=("model",)
    )
    for model in sorted(set(models)):
        waiting.add_metric([model], float(await jobs.queued_count(model)))
    families.append(waiting)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


async def _histogram(
    client: aioredis.Redis, prefix: str, name: str, help_text: str, labels: tuple[str, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"{_NAMESPACE}_{name}", help_text, labels=labels)
    stored = await client.hgetall(histogram_key(prefix, name))
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for field, value in stored.items():
        *label_values, bucket = parse_label_field(text(field))
        series.setdefault(tuple(label_values), {})[bucket] = float(value)
    for values, cells in sorted(series.items()):
        cumulative = 0.0
        buckets: list[tuple[str, float]] = []
        for bound in BUCKETS:
            cumulative += cells.get(str(bound), 0.0)
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", cumulative + cells.get("+Inf", 0.0)))
        family.add_metric(list(values), buckets, cells.get("sum", 0.0))
    return family
