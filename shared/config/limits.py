"""The size caps of a job: the settings' defaults, overridden per model in models.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_proxy.shared.config.schema import ModelConfig

if TYPE_CHECKING:
    from model_proxy.shared.settings import Settings

__all__ = ["SizeLimits"]


@dataclass(frozen=True)
class SizeLimits:
    """Bytes a job may fetch and keep: one DICOM instance (``instance``), all it fetches from
    the PACS together (``input``), and the model's answer (``answer``)."""

    instance: int
    input: int
    answer: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SizeLimits:
        return cls(settings.max_instance_bytes, settings.max_input_bytes, settings.max_answer_bytes)

    def for_model(self, model: ModelConfig | None) -> SizeLimits:
        """These caps, with those the model's models.json entry sets in their place."""
        if model is None:
            return self
        return SizeLimits(
            instance=model.max_instance_bytes or self.instance,
            input=model.max_input_bytes or self.input,
            answer=model.max_answer_bytes or self.answer,
        )
