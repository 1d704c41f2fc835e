"""The Redis keys of jobs, all under one prefix: the deployment's ``MODEL_PROXY_REDIS_PREFIX``."""

from __future__ import annotations

__all__ = ["JobKeys"]


class JobKeys:
    """Every key and channel of the job records of one deployment."""

    def __init__(self, prefix: str = "model-proxy") -> None:
        self.prefix = prefix
        self.events = f"{prefix}:job-events"  # channel: the id of every job that changed
        self.index = f"{prefix}:jobs"  # sorted set: every job by creation time
        # sorted sets, one per state (the prefix and the state's name): its jobs by creation time
        self.states = f"{prefix}:jobs:"
        self.running = f"{prefix}:running"  # sorted set: jobs a worker has claimed
        self.reaper_lock = f"{prefix}:reaper"

    def in_state(self, state: str) -> str:
        """Sorted set: the jobs now in ``state``, by creation time."""
        return f"{self.states}{state}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"

    def result_object(self, job_id: str, name: str) -> str:
        """A DICOM object made from the job's answer, by its ``JobOutput.key`` (its SOP
        Instance UID); lives as long as the answer."""
        return f"{self.prefix}:object:{job_id}:{name}"

    def staged_result(self, job_id: str, token: str) -> str:
        """A result written by one run, moved into place only if that run may finish the job."""
        return f"{self.prefix}:staged:{job_id}:{token}"

    def lease(self, job_id: str) -> str:
        """Held by the worker running the job, renewed while it lives."""
        return f"{self.prefix}:lease:{job_id}"

    def active(self, fingerprint: str) -> str:
        """The unfinished job of these identical requests."""
        return f"{self.prefix}:active:{fingerprint}"

    def cached(self, fingerprint: str) -> str:
        """The succeeded job of these identical requests, while its result lasts."""
        return f"{self.prefix}:cached:{fingerprint}"

    def asked(self, requester: str) -> str:
        """Sorted set: the jobs ``requester`` asked for (or was answered with from the cache),
        by the time of its latest ask; entries older than the records' time to live are pruned."""
        return f"{self.prefix}:asked:{requester}"

    def unfinished(self, requester: str) -> str:
        """Sorted set: the unfinished jobs ``requester`` is attached to, for its quota (entries
        of jobs that finished, expired or it left are dropped when it asks again)."""
        return f"{self.prefix}:unfinished:{requester}"

    def queued(self, model_id: str) -> str:
        """Sorted set: the model's jobs waiting for a worker."""
        return f"{self.prefix}:queued:{model_id}"

    def model_slots(self, model_id: str) -> str:
        """Sorted set: the runs (by token) calling the model now, scored by when their place
        expires."""
        return f"{self.prefix}:slots:{model_id}"

    def durations(self, model_id: str) -> str:
        """Hash: the model's recent stage durations (averages over its latest runs)."""
        return f"{self.prefix}:durations:{model_id}"

    def consumers(self, queue: str) -> str:
        """Sorted set: the live workers reading ``queue`` (member ``<slots>:<name>``), scored
        by when their announcement expires."""
        return f"{self.prefix}:consumers:{queue}"
