"""Where a job's time went: one log line per finished run, the stage metrics, and the model's
recent durations in Redis (the API's queue estimates)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import Job, JobKeys
from model_proxy.shared.jobs.durations import RunDurations, record_run_durations
from model_proxy.shared.metrics import Metrics
from model_proxy.shared.settings import Settings

__all__ = ["StageTimings", "record_finished_run", "remember_durations"]

log = logging.getLogger(__name__)


@dataclass
class StageTimings:
    """Seconds per stage of one run, and what it fetched, for the log and the histograms."""

    queue_wait: float = 0.0
    fetch: float = 0.0
    encode: float = 0.0
    model_call: float = 0.0
    instances: int = 0
    nbytes: int = 0

    def log_fields(self) -> str:
        return (
            f"queue_wait_s={self.queue_wait:.3f} fetch_s={self.fetch:.3f} "
            f"encode_s={self.encode:.3f} model_s={self.model_call:.3f} "
            f"instances={self.instances} bytes={self.nbytes}"
        )


def record_finished_run(
    metrics: Metrics, job: Job, ending: str, timings: StageTimings, total: float
) -> None:
    """Log the ``stage=finished`` line and count the run in the metrics.

    ``ending`` is the run's label: ``succeeded``, ``failed_<code>``, ``stopped_<why>`` or
    ``dropped_<why>``.
    """
    level = logging.INFO if ending == "succeeded" else logging.WARNING
    log.log(
        level,
        "job=%s stage=finished outcome=%s total_s=%.3f %s",
        job.id,
        ending,
        total,
        timings.log_fields(),
    )
    model, server = job.request.model_id, job.request.server_id
    metrics.inc("jobs", {"model": model, "server": server, "outcome": ending})
    metrics.inc("bytes_fetched", {"server": server}, timings.nbytes)
    metrics.inc("instances_fetched", {"server": server}, timings.instances)
    for stage, seconds in (
        ("queue_wait", timings.queue_wait),
        ("fetch", timings.fetch),
        ("encode", timings.encode),
        ("model_call", timings.model_call),
        ("total", total),
    ):
        metrics.observe("stage_seconds", {"stage": stage, "model": model}, seconds)


def remember_durations(
    client: redis.Redis,
    keys: JobKeys,
    settings: Settings,
    job: Job,
    timings: StageTimings,
    total: float,
) -> None:
    """Fold a run that ended with an answer into its model's recent durations (the basis of
    the ETA); a Redis blip costs only this one sample."""
    durations = RunDurations(
        queue_wait=timings.queue_wait, fetch=timings.fetch, inference=timings.model_call, run=total
    )
    try:
        record_run_durations(
            client,
            keys,
            job.request.model_id,
            durations,
            settings.eta_weight,
            settings.eta_history_ttl_seconds,
        )
    except ModelProxyError as error:
        log.warning("job=%s stage=durations not recorded (%s)", job.id, error.code)
