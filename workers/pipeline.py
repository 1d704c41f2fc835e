"""One inference job from start to end: fetch from the PACS, encode, call the model, store."""

from __future__ import annotations

import logging
import time
from contextlib import closing

from shared.errors import InternalError, ModelProxyError
from shared.inputs import plan_inputs
from shared.jobs import JobState
from shared.model_body import open_model_body
from workers.context import WorkerContext

__all__ = ["run_job"]

log = logging.getLogger(__name__)


def run_job(job_id: str, context: WorkerContext) -> None:
    """Run the job ``job_id`` unless it is unknown or already finished (a redelivery)."""
    store = context.store
    job = store.get(job_id)
    if job is None:
        log.warning("job %s: no record (expired?); nothing to do", job_id)
        return
    if job.state.finished:
        log.info("job %s: already %s; nothing to do", job_id, job.state.value)
        return
    request = job.request
    started = time.perf_counter()
    log.info("job %s: started (%s)", job_id, request.describe())
    try:
        model = context.catalog.model(request.model_id)
        source = context.sources.source_for(request.server_id)
        plan = plan_inputs(request, model)
        store.set_state(job_id, JobState.FETCHING)
        body = open_model_body(plan, source)
        store.set_state(job_id, JobState.INFERRING)
        with closing(body):
            result = context.model_client.infer(request.model_id, model.uri, body)
        store.set_progress(job_id, body.instances_sent, body.bytes_fetched)
        store.succeed(job_id, result)
    except ModelProxyError as error:
        log.warning(
            "job %s: failed after %.2f s: %s (%s)",
            job_id,
            time.perf_counter() - started,
            error.code,
            error.message,
        )
        store.fail(job_id, error)
        return
    except Exception:
        log.exception("job %s: unexpected failure", job_id)
        store.fail(job_id, InternalError("the inference failed unexpectedly; see the worker log"))
        return
    log.info(
        "job %s: succeeded in %.2f s (%d instances, %d bytes fetched, %d bytes of result)",
        job_id,
        time.perf_counter() - started,
        body.instances_sent,
        body.bytes_fetched,
        len(result),
    )
