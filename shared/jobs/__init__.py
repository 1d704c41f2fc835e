"""Jobs: the public record of each inference request, kept in Redis.

A job is a hash ``model-proxy:job:{id}``; its result, the model's JSON document as bytes, is
``model-proxy:result:{id}``. Every visible change is announced on the channel
``model-proxy:job-events`` (the message is the job id), so waiters wake at once. Records and
results expire after the configured time to live. All changes go through the Lua scripts of
:mod:`shared.jobs.scripts`.
"""

from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.model import (
    Job,
    JobError,
    JobState,
    job_from_fields,
    job_to_fields,
    new_job,
)
from model_proxy.shared.jobs.store import Claim, JobStore, Written

__all__ = [
    "Claim",
    "Job",
    "JobError",
    "JobKeys",
    "JobState",
    "JobStore",
    "Written",
    "job_from_fields",
    "job_to_fields",
    "new_job",
]
