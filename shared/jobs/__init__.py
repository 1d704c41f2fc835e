"""Jobs: the public record of each inference request, kept in Redis.

A job is a hash ``<prefix>:job:{id}``; its result, the model's JSON document, gzipped once by
the worker (:mod:`~model_proxy.shared.jobs.answers`), is ``<prefix>:result:{id}``. Every
visible change is announced on the channel ``<prefix>:job-events`` (the message is the job id),
so waiters wake at once. The prefix is the deployment's (``MODEL_PROXY_REDIS_PREFIX``,
``model-proxy`` by default). Each job is also in the index of its state,
``<prefix>:jobs:<state>``, for listings. Records and results expire after
the configured time to live. All changes go through the Lua scripts of
:mod:`~model_proxy.shared.jobs.scripts`, called as :mod:`~model_proxy.shared.jobs.operations`
describes, by the workers' :class:`JobStore` and the broker's asyncio store alike; each change
answers one of the enums of :mod:`~model_proxy.shared.jobs.outcomes`.
"""

from model_proxy.shared.jobs.answers import (
    StoredAnswer,
    answer_json,
    decompressed_chunks,
    pack_answer,
    read_answer,
)
from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.model import (
    JOB_STATES,
    Job,
    JobError,
    JobOutput,
    JobState,
    job_from_fields,
    job_to_fields,
    new_job,
    output_fields,
)
from model_proxy.shared.jobs.outcomes import (
    Admission,
    Admitted,
    Claim,
    Detached,
    Lease,
    Requeued,
    Slot,
    Terminated,
    Written,
)
from model_proxy.shared.jobs.store import JobStore

__all__ = [
    "JOB_STATES",
    "Admission",
    "Admitted",
    "Claim",
    "Detached",
    "Job",
    "JobError",
    "JobKeys",
    "JobOutput",
    "JobState",
    "JobStore",
    "Lease",
    "Requeued",
    "Slot",
    "StoredAnswer",
    "Terminated",
    "Written",
    "answer_json",
    "decompressed_chunks",
    "job_from_fields",
    "job_to_fields",
    "new_job",
    "output_fields",
    "pack_answer",
    "read_answer",
]
