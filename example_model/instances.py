"""Reading the DICOM files a model receives: identity, digest, pixels and voxel size.

pydicom's exceptions are translated into :class:`~example_model.errors.InvalidInput` here, so the
rest of the package never sees them.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from model_proxy.example_model.body import EncodedInstance
from model_proxy.example_model.errors import InvalidInput

__all__ = ["Instance", "modality_values", "read_instance", "voxel_volume_mm3"]

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class Instance:
    """One received DICOM file, read with pydicom."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sha256: str
    """Hex SHA-256 of the Part-10 file bytes as received."""
    size: int
    """Length of the file in bytes."""
    dataset: Dataset


def read_instance(encoded: EncodedInstance) -> Instance:
    """Read one file of the body; it must be a DICOM Part-10 file with the three UIDs."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(encoded.data))
    except Exception as exc:  # pydicom raises many kinds of errors on broken files
        raise InvalidInput(
            f"{encoded.location} is not a readable DICOM Part-10 file: {exc}"
        ) from None
    uids = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = dataset.get(keyword)
        if not value:
            raise InvalidInput(f"{encoded.location} has no {keyword}")
        uids.append(str(value))
    study_uid, series_uid, sop_uid = uids
    return Instance(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sha256=hashlib.sha256(encoded.data).hexdigest(),
        size=len(encoded.data),
        dataset=dataset,
    )


def modality_values(instance: Instance) -> npt.NDArray[np.float64]:
    """The pixel values of the instance in modality units (e.g. Hounsfield units), Rows x Columns.

    * RescaleSlope / RescaleIntercept (or a Modality LUT) are applied when present.
    * A multi-frame instance contributes its **first frame** only; per-frame functional groups of
      enhanced multi-frame objects are not looked at.
    * A colour instance (SamplesPerPixel > 1) is reduced to the mean of its samples, without a
      modality transform.
    """
    dataset = instance.dataset
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise InvalidInput(f"instance {instance.sop_uid} has no pixel data")
    try:
        dataset.pixel_array_options(index=0)
        pixels = dataset.pixel_array
        if int(dataset.get("SamplesPerPixel", 1) or 1) > 1:
            values = pixels.mean(axis=-1)
        else:
            values = apply_modality_lut(pixels, dataset)
    except Exception as exc:  # missing pixel module elements, unsupported transfer syntax, ...
        raise InvalidInput(
            f"cannot decode the pixels of instance {instance.sop_uid}: {exc}"
        ) from None
    return np.asarray(values, dtype=np.float64)


def voxel_volume_mm3(instance: Instance) -> float:
    """PixelSpacing (row x column) x SliceThickness in mm³; each missing value counts as 1 mm."""
    dataset = instance.dataset
    spacing = dataset.get("PixelSpacing")
    pair = list(spacing) if isinstance(spacing, MultiValue | list | tuple) else []
    row_spacing, column_spacing = (_millimetres(v) for v in pair) if len(pair) == 2 else (1.0, 1.0)
    return row_spacing * column_spacing * _millimetres(dataset.get("SliceThickness"))


def _millimetres(value: Any) -> float:
    """A positive length from a DICOM DS value, else 1 mm."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 1.0
    return number if number > 0 and math.isfinite(number) else 1.0
