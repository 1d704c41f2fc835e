"""Storing a succeeded job's DICOM objects into the PACS again (``POST /jobs/{id}/store``).

The objects kept beside the answer go to the server the job recorded for them (else the model's
``store.server``, else the request's server), into the source study, as at the job's end
(:func:`~model_proxy.workers.result_store.store_objects`): transient failures retried, the
whole bounded by the job time limit (``MODEL_PROXY_JOB_TIME_LIMIT``). What it did replaces the
job's ``outputs`` and ``storeError``; the job stays succeeded.
"""

from __future__ import annotations

import logging

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import Job, JobError, JobState
from model_proxy.workers.context import WorkerContext
from model_proxy.workers.cutoff import Cutoff
from model_proxy.workers.result_series import own_series
from model_proxy.workers.result_store import StoredObjects, describe_objects, store_objects
from model_proxy.workers.retry import RetryPolicy

__all__ = ["store_job_objects"]

log = logging.getLogger(__name__)


def store_job_objects(job_id: str, context: WorkerContext, policy: RetryPolicy) -> bool:
    """Store the kept objects of succeeded job ``job_id`` again and record what was stored;
    False (nothing done) when the job is gone, not succeeded, or has no object left."""
    store = context.store
    job = store.get(job_id)
    if job is None or job.state is not JobState.SUCCEEDED or not job.outputs:
        log.info("job=%s stage=stow-again skipped: no succeeded job with objects", job_id)
        return False
    objects = store.get_objects(job_id, [output.key for output in job.outputs])
    if not objects:
        log.info("job=%s stage=stow-again skipped: its objects expired", job_id)
        return False
    server_id = _server_of(job, context)
    try:
        source = context.sources.source_for(server_id)
    except ModelProxyError as error:
        kept = StoredObjects(
            describe_objects(objects, server_id), JobError(code=error.code, message=error.message)
        )
    else:
        with Cutoff(context.settings.job_time_limit) as cutoff:
            kept = store_objects(
                job_id,
                objects,
                source,
                job.request.study_uid,
                policy,
                cutoff.time_left,
                cutoff.wait,
            )
        own_series(context).remember(job.request.study_uid, kept.outputs)
    return store.record_store(job_id, kept.outputs, kept.error)


def _server_of(job: Job, context: WorkerContext) -> str:
    recorded = next((output.server for output in job.outputs if output.server), None)
    if recorded is not None:
        return recorded
    try:
        model = context.catalog.model(job.request.model_id)
    except ModelProxyError:
        return job.request.server_id
    return (model.store.server if model.store else None) or job.request.server_id
