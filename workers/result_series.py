"""The series model-proxy stored into each study, so they are not sent to models as inputs.

When a STOW-RS of a job's objects succeeds, the series of the objects the PACS confirmed are
added to a Redis set per study (``<prefix>:own-series:<study>``), which lives
``MODEL_PROXY_OWN_SERIES_TTL_SECONDS`` after the last store into the study. A study-level job of a
model without ``includeOwnResults`` leaves them out of what it fetches, whatever their Modality
(so even a model with ``includeNonImageSeries`` is not sent our own SEG and SR).

Remembering is best effort: Redis failing at that moment is logged, never a job's failure (the
Modality filter still leaves our SEG and SR out for most models).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace

import redis

from model_proxy.shared.config import ModelConfig
from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.inputs import InputPlan, InstanceList
from model_proxy.shared.jobs import JobOutput
from model_proxy.shared.redis_errors import redis_errors
from model_proxy.workers.context import WorkerContext

__all__ = ["OwnSeries", "own_series", "without_own_series"]

log = logging.getLogger(__name__)


class OwnSeries:
    """The series model-proxy stored, per study, in Redis under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_seconds: int) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl_seconds

    def key(self, study_uid: str) -> str:
        return f"{self._prefix}:own-series:{study_uid}"

    def remember(self, study_uid: str, outputs: Iterable[JobOutput]) -> None:
        """Add the series of the ``outputs`` the PACS stored; the study's set lives on."""
        series = {o.series_instance_uid for o in outputs if o.stored and o.series_instance_uid}
        if not series:
            return
        key = self.key(study_uid)
        try:
            with redis_errors(), self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(key, *sorted(series))
                pipe.expire(key, self._ttl)
                pipe.execute()
        except ModelProxyError as error:
            log.warning("the series stored into a study not remembered: %s", error.code)

    def of_study(self, study_uid: str) -> frozenset[str]:
        """The series model-proxy stored into the study (within the time they are kept)."""
        with redis_errors():
            members = self._redis.smembers(self.key(study_uid))
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)


def own_series(context: WorkerContext) -> OwnSeries:
    """The worker's record of the series it stored, on its Redis."""
    settings = context.settings
    return OwnSeries(context.redis, context.store.keys.prefix, settings.own_series_ttl_seconds)


def without_own_series(plan: InputPlan, model: ModelConfig, context: WorkerContext) -> InputPlan:
    """The plan of a study-level request without the series model-proxy stored into the study,
    unless the model asks for them (``includeOwnResults``); other plans as they are."""
    if not isinstance(plan, InstanceList) or plan.series_uid is not None:
        return plan
    if model.include_own_results:
        return plan
    return replace(plan, skip_series=own_series(context).of_study(plan.study_uid))
