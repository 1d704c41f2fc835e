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

    def fingerprint(self) -> str:
        """Identical requests (model, server, level, UIDs, data filters) share this digest."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def describe(self) -> str:
        """A short label for logs: the model, server and level, no UIDs (they identify patients)."""
        return f"{self.task.value} model={self.model_id} server={self.server_id} level={self.level}"
