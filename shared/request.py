"""What a viewer asks for: one model's result on a study, a series or an instance of one PACS."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from model_proxy.shared.config.schema import Level, Task

__all__ = ["DataFilter", "InferenceRequest"]


class DataFilter(BaseModel):
    """A viewer's choice for one declared model input: ``uuid`` is a Series or SOP Instance UID."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    data_key: str
    uuid: str
    data_filter: tuple[DataFilter, ...] = ()


class InferenceRequest(BaseModel):
    """A validated request; it travels in the job record, so it holds ids and UIDs only."""

    model_config = ConfigDict(frozen=True)

    task: Task
    model_id: str
    server_id: str
    level: Level
    study_uid: str
    series_uid: str | None = None
    instance_uid: str | None = None
    data_filters: tuple[DataFilter, ...] = ()
    sharing_key: str | None = None
    """The fingerprint the API computed from the resolved input plan and the effective settings
    of the model and server (:mod:`model_proxy.shared.fingerprint`); it travels with the job so
    every process files the job under the same key, whatever configuration it has loaded."""

    def fingerprint(self) -> str:
        """Requests that would get the same answer share this digest: the API's
        ``sharing_key``, or for a request built without one (older records, tests) a digest of
        the request as given."""
        if self.sharing_key is not None:
            return self.sharing_key
        return hashlib.sha256(self.model_dump_json(exclude={"sharing_key"}).encode()).hexdigest()

    def describe(self) -> str:
        """A short label for logs: the model, server and level, no UIDs (they identify patients)."""
        return f"{self.task.value} model={self.model_id} server={self.server_id} level={self.level}"
