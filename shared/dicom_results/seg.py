"""A zhiva segmentation answer as a DICOM Segmentation (SEG), one object per series.

Each distinct ``className`` of the series' segments becomes one BINARY segment; a frame per
source instance and segment holds its mask, and frames with nothing marked are left out. The
segment's colour is the answer's ``color`` (else ``classColor``) where it can be read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model_proxy.shared.dicom_results.answers import frames
from model_proxy.shared.dicom_results.colours import display_colour
from model_proxy.shared.dicom_results.identity import (
    UNKNOWN,
    ModelIdentity,
    new_object_attributes,
)
from model_proxy.shared.dicom_results.sources import image_sources, sources_by_uid
from model_proxy.shared.errors import UnconvertibleAnswer

__all__ = ["segmentation_to_seg"]

_SERIES_NUMBER = 9901
_LABEL_LENGTH = 64  # SegmentLabel is LO
_UNNAMED = "Segment"


def segmentation_to_seg(
    answer: Mapping[str, Any], sources: Sequence[Dataset], identity: ModelIdentity
) -> Dataset:
    """The SEG of one series: ``sources`` are that series' instances (headers suffice; non-image
    instances among them are ignored), ``answer`` the model's whole answer document.

    Raises :class:`UnconvertibleAnswer` when the answer names an instance of the series that is
    not among the sources, a mask's shape is not the image's, or nothing at all is marked.
    """
    images = image_sources(sources)
    if not images:
        raise UnconvertibleAnswer("no image instances to refer a segmentation to")
    by_uid = sources_by_uid(images)
    series = {str(image.SeriesInstanceUID) for image in images}
    if len(series) > 1:
        raise UnconvertibleAnswer("a segmentation object covers one series; several were given")
    (series_uid,) = series

    classes: dict[str, dict[str, Any]] = {}  # className -> its first segment (for the colour)
    masks: dict[tuple[str, str], npt.NDArray[np.bool_]] = {}
    for found in frames(answer):
        if found.series_uid != series_uid:
            continue
        segments = found.frame.get("segments")
        if not isinstance(segments, list):
            continue
        image = by_uid.get(found.sop_uid)
        if image is None:
            raise UnconvertibleAnswer(
                f"the answer segments instance {found.sop_uid}, which was not sent to the model"
            )
        for segment in segments:
            if not isinstance(segment, Mapping):
                continue
            label = _label(segment)
            classes.setdefault(label, dict(segment))
            mask = _mask(segment.get("points"), image, found.sop_uid)
            key = (found.sop_uid, label)
            masks[key] = masks[key] | mask if key in masks else mask
    if not any(mask.any() for mask in masks.values()):
        raise UnconvertibleAnswer(f"the answer marks no pixel of series {series_uid}")

    labels = list(classes)
    pixels = np.zeros(
        (len(images), int(images[0].Rows), int(images[0].Columns), len(labels)), dtype=np.bool_
    )
    for index, image in enumerate(images):
        for number, label in enumerate(labels):
            marked = masks.get((str(image.SOPInstanceUID), label))
            if marked is not None:
                pixels[index, :, :, number] = marked
    algorithm = hd.AlgorithmIdentificationSequence(
        name=identity.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=identity.version,
        source=identity.manufacturer,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label[:_LABEL_LENGTH],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.MorphologicallyAbnormalStructure,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=generate_uid(),
            tracking_id=label[:_LABEL_LENGTH],
            display_color=_colour(classes[label]),
        )
        for number, label in enumerate(labels, start=1)
    ]
    try:
        return hd.seg.Segmentation(
            source_images=images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            **new_object_attributes(identity, _SERIES_NUMBER),
            manufacturer_model_name=identity.name,
            software_versions=identity.version,
            device_serial_number=UNKNOWN,
            content_description=f"AI segmentation by {identity.name}"[:64],
            content_label="AI_SEG",
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        # highdicom refuses sources without the geometry a SEG needs
        raise UnconvertibleAnswer(f"a segmentation object cannot be made: {exc}") from None


def _label(segment: Mapping[str, Any]) -> str:
    name = segment.get("className")
    return name.strip() if isinstance(name, str) and name.strip() else _UNNAMED


def _colour(segment: Mapping[str, Any]) -> hd.color.CIELabColor | None:
    return display_colour(segment.get("color")) or display_colour(segment.get("classColor"))


def _mask(points: object, image: Dataset, sop_uid: str) -> npt.NDArray[np.bool_]:
    shape = (int(image.Rows), int(image.Columns))
    try:
        mask = np.asarray(points)
    except (ValueError, TypeError):
        mask = np.empty(0)
    if mask.shape != shape or not (
        np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.bool_)
    ):
        raise UnconvertibleAnswer(
            f"the mask of instance {sop_uid} is not {shape[0]} x {shape[1]} integers"
        )
    return mask != 0
