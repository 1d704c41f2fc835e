"""The name, version and manufacturer of a model, as the DICOM objects made from its answers
name the algorithm (AlgorithmIdentificationSequence, ContributingEquipment, SoftwareVersions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from model_proxy.shared.config.schema import ModelConfig

__all__ = [
    "UNKNOWN",
    "ModelIdentity",
    "contributing_equipment",
    "identity_of",
    "new_object_attributes",
]

_PROCESSING_EQUIPMENT = Code("109104", "DCM", "Processing Equipment")

UNKNOWN = "unknown"
"""What stands for a version or manufacturer that models.json does not give."""


@dataclass(frozen=True)
class ModelIdentity:
    """Who made a result: the model's name, its version and its manufacturer."""

    name: str
    version: str = UNKNOWN
    manufacturer: str = UNKNOWN


def identity_of(key: str, model: ModelConfig) -> ModelIdentity:
    """The identity of the models.json entry ``key``: its ``name`` (else the key itself), its
    ``version`` and ``manufacturer`` (else ``"unknown"``)."""
    return ModelIdentity(
        name=model.name or key,
        version=model.version or UNKNOWN,
        manufacturer=model.manufacturer or UNKNOWN,
    )


def contributing_equipment(identity: ModelIdentity) -> hd.ContributingEquipment:
    """The model as the processing equipment that made an object's content."""
    return hd.ContributingEquipment(
        manufacturer=identity.manufacturer,
        purpose_of_reference=_PROCESSING_EQUIPMENT,
        manufacturer_model_name=identity.name,
        software_versions=identity.version,
        contribution_description="AI result of model-proxy's model",
    )


def new_object_attributes(identity: ModelIdentity, series_number: int) -> dict[str, Any]:
    """The arguments every highdicom object made for ``identity`` shares: a new series and
    instance UID, the series number, the manufacturer and the model as equipment."""
    return {
        "series_instance_uid": generate_uid(),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": identity.manufacturer,
        "contributing_equipment": [contributing_equipment(identity)],
    }
