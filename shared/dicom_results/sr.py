"""Zhiva annotation and prediction answers as TID 1500 Measurement Reports (Comprehensive 3D SR).

* every ROI of an annotation (``rois[].points``, a polygon of ``[x, y]`` pixel positions) is one
  planar ROI group whose region is a closed SCOORD POLYLINE on its source instance (2-D SCOORD
  has no POLYGON): the first point is repeated at the end;
* every ``metadata`` entry, at study, series or instance level, is a measurement group that
  refers to the images it was made on: a number with its UCUM unit where the value carries one
  (``345.8 cm³``), else a text evaluation ``"<title>: <value>"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from model_proxy.shared.dicom_results.answers import MetadataEntry, frames, metadata_entries
from model_proxy.shared.dicom_results.identity import ModelIdentity, new_object_attributes
from model_proxy.shared.dicom_results.sources import image_sources, sources_by_uid
from model_proxy.shared.dicom_results.values import quantity_of
from model_proxy.shared.errors import UnconvertibleAnswer

__all__ = ["RESULT_SCHEME", "annotations_to_sr", "predictions_to_sr"]

RESULT_SCHEME = "99MODELPROXY"
"""The private coding scheme of the concept names taken from a model's ``title``s."""

_SERIES_NUMBER = 9902
_MEANING_LENGTH = 64  # CodeMeaning is LO
_QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
_IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
_Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


def annotations_to_sr(
    answer: Mapping[str, Any], sources: Sequence[Dataset], identity: ModelIdentity
) -> Dataset:
    """The Measurement Report of an annotation answer: one planar ROI group per ROI, then the
    answer's ``metadata`` entries as in :func:`predictions_to_sr`."""
    images = image_sources(sources)
    by_uid = _by_uid(images)
    algorithm = _algorithm(identity)
    groups: list[_Group] = []
    for found in frames(answer):
        rois = found.frame.get("rois")
        if not isinstance(rois, list):
            continue
        image = _image(by_uid, found.sop_uid)
        for roi in rois:
            if isinstance(roi, Mapping):
                groups.append(_roi_group(roi, image, found.sop_uid, algorithm))
    groups += _metadata_groups(metadata_entries(answer), images, by_uid, algorithm)
    return _report(groups, images, identity)


def predictions_to_sr(
    answer: Mapping[str, Any], sources: Sequence[Dataset], identity: ModelIdentity
) -> Dataset:
    """The Measurement Report of a prediction answer: one group per ``metadata`` entry, each
    referring to the images of its level (the study's, the series' or the instance)."""
    images = image_sources(sources)
    by_uid = _by_uid(images)
    groups = _metadata_groups(metadata_entries(answer), images, by_uid, _algorithm(identity))
    return _report(groups, images, identity)


def _by_uid(images: Sequence[Dataset]) -> dict[str, Dataset]:
    if not images:
        raise UnconvertibleAnswer("no image instances to refer a report to")
    return sources_by_uid(images)


def _image(by_uid: Mapping[str, Dataset], sop_uid: str) -> Dataset:
    image = by_uid.get(sop_uid)
    if image is None:
        raise UnconvertibleAnswer(
            f"the answer describes instance {sop_uid}, which was not sent to the model"
        )
    return image


def _algorithm(identity: ModelIdentity) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=identity.name, version=identity.version, manufacturer=identity.manufacturer
    )


def _concept(title: object, fallback: str) -> hd.sr.CodedConcept:
    """A concept named by the model's title: private scheme, code value from its digest."""
    text = title.strip() if isinstance(title, str) and title.strip() else fallback
    code = hashlib.sha256(text.encode()).hexdigest()[:16].upper()
    return hd.sr.CodedConcept(code, RESULT_SCHEME, text[:_MEANING_LENGTH])


def _roi_group(
    roi: Mapping[str, Any],
    image: Dataset,
    sop_uid: str,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    points = _polygon(roi.get("points"), sop_uid)
    closed = np.vstack([points, points[:1]])
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=closed,
        source_image=hd.sr.SourceImageForRegion(str(image.SOPClassUID), sop_uid),
    )
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=_concept(roi.get("className"), "ROI").meaning
        ),
        referenced_region=region,
        finding_type=_concept(roi.get("className"), "ROI"),
        algorithm_id=algorithm,
    )


def _polygon(points: object, sop_uid: str) -> np.ndarray:
    try:
        array = np.asarray(points, dtype=np.float64)
    except (ValueError, TypeError):
        array = np.empty(0)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 3:
        raise UnconvertibleAnswer(
            f"an ROI of instance {sop_uid} is not a polygon of at least three [x, y] points"
        )
    if not np.isfinite(array).all():
        raise UnconvertibleAnswer(f"an ROI of instance {sop_uid} has a point that is no number")
    # the viewer's image coordinates are SCOORD's: (0, 0) is the first pixel's top left corner
    return array


def _metadata_groups(
    entries: Iterable[MetadataEntry],
    images: Sequence[Dataset],
    by_uid: Mapping[str, Dataset],
    algorithm: hd.sr.AlgorithmIdentification,
) -> list[_Group]:
    groups: list[_Group] = []
    for found in entries:
        if found.sop_uid is not None:
            described = [_image(by_uid, found.sop_uid)]
        else:
            described = [
                image
                for image in images
                if found.series_uid is None or str(image.SeriesInstanceUID) == found.series_uid
            ]
        if not described:
            raise UnconvertibleAnswer(
                f"the answer describes series {found.series_uid}, which was not sent to the model"
            )
        groups.append(_metadata_group(found.entry, described, algorithm))
    return groups


def _metadata_group(
    entry: Mapping[str, Any], images: Sequence[Dataset], algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    name = _concept(entry.get("title"), "Result")
    quantity = quantity_of(entry)
    measurements = None
    if quantity is not None:
        measurements = [
            hd.sr.Measurement(
                name=name,
                value=quantity.value,
                unit=hd.sr.CodedConcept(quantity.unit, "UCUM", quantity.unit_meaning),
                algorithm_id=algorithm,
            )
        ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name.meaning),
        finding_type=name,
        algorithm_id=algorithm,
        measurements=measurements,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(str(image.SOPClassUID), str(image.SOPInstanceUID))
            for image in images
        ],
    )
    if quantity is None:
        text = f"{name.meaning}: {entry.get('value')}"
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                name=_QUALITATIVE_EVALUATIONS,
                value=text[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def _report(
    groups: Sequence[_Group], images: Sequence[Dataset], identity: ModelIdentity
) -> Dataset:
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[identity.name, identity.version]),
            name=identity.name[:_MEANING_LENGTH],
            manufacturer_name=identity.manufacturer,
            model_name=identity.name,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_IMAGING_PROCEDURE,
        imaging_measurements=list(groups),
        referenced_images=list(images),
    )
    try:
        return hd.sr.Comprehensive3DSR(
            evidence=list(images),
            content=report,
            **new_object_attributes(identity, _SERIES_NUMBER),
            is_complete=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise UnconvertibleAnswer(f"a report cannot be made: {exc}") from None
