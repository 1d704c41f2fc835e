"""Which DICOM data a model receives, and in which shape (model-contract §2).

:func:`plan_inputs` turns a request and the model's declared ``dataFilter`` into a tree of
:class:`InstanceList`, :class:`SingleInstance` and :class:`Keyed` nodes. The broker builds it to
reject a request early; the worker builds it again to fetch and encode.

A study-level request sends the study's image series only: series whose Modality is in
:data:`NON_IMAGE_MODALITIES` (results such as SEG and SR, including those model-proxy stores,
reports, presentation states) are left out unless the model's entry says
``"includeNonImageSeries": true``. The series model-proxy itself stored into the study are left
out as well, whatever their Modality, unless the entry says ``"includeOwnResults": true``: the
worker names them in ``skip_series`` (it knows them from Redis). A series or instance the request
names is sent whatever its Modality: the viewer chose it.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_proxy.shared.config.schema import DataFilterSpec, Level, ModelConfig
from model_proxy.shared.errors import InvalidDataFilter
from model_proxy.shared.request import DataFilter, InferenceRequest

__all__ = [
    "NON_IMAGE_MODALITIES",
    "InputPlan",
    "InstanceList",
    "Keyed",
    "SingleInstance",
    "plan_inputs",
]

NON_IMAGE_MODALITIES = frozenset(
    {
        "SEG",  # segmentation
        "SR",  # structured report
        "KO",  # key object selection
        "PR",  # presentation state
        "DOC",  # encapsulated document (PDF, CDA)
        "RTSTRUCT",
        "RTPLAN",
        "RTRECORD",
        "RTDOSE",
        "REG",  # registration
        "FID",  # fiducials
        "RWV",  # real world value map
        "PLAN",
        "AU",  # audio
        "ECG",
        "HD",  # hemodynamic waveform
        "RESP",  # respiratory waveform
    }
)
"""Modalities of series that are not images a model reads (DICOM PS3.3 C.7.3.1.1.1)."""


@dataclass(frozen=True)
class InstanceList:
    """Every instance of a study (``series_uid`` None) or of a series: a JSON array of strings.

    Of a study, the series whose Modality is in ``skip_modalities`` are left out, and those in
    ``skip_series``."""

    study_uid: str
    series_uid: str | None = None
    skip_modalities: frozenset[str] = frozenset()
    skip_series: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SingleInstance:
    """One instance: a single JSON string."""

    study_uid: str
    series_uid: str
    instance_uid: str


@dataclass(frozen=True)
class Keyed:
    """``{"<dataKey>": {"data": <input>}, ...}`` in the order the model declares its keys."""

    entries: tuple[tuple[str, InputPlan], ...]


InputPlan = InstanceList | SingleInstance | Keyed


def plan_inputs(request: InferenceRequest, model: ModelConfig) -> InputPlan:
    study = request.study_uid
    if request.level is Level.INSTANCE:
        assert request.series_uid is not None and request.instance_uid is not None
        return SingleInstance(study, request.series_uid, request.instance_uid)
    if request.level is Level.SERIES:
        assert request.series_uid is not None
        series = request.series_uid
        if not model.data_filter:
            return InstanceList(study, series)
        chosen = _match(model.data_filter, request.data_filters, "data-filters")
        return Keyed(
            tuple(
                (spec.data_key, SingleInstance(study, series, choice.uuid))
                for spec, choice in chosen
            )
        )
    if not model.data_filter:
        skip = frozenset() if model.include_non_image_series else NON_IMAGE_MODALITIES
        return InstanceList(study, skip_modalities=skip)
    entries: list[tuple[str, InputPlan]] = []
    for spec, choice in _match(model.data_filter, request.data_filters, "data-filters"):
        if spec.data_filter:
            where = f"data-filters {spec.data_key!r} dataFilter"
            nested = _match(spec.data_filter, choice.data_filter, where)
            entries.append(
                (
                    spec.data_key,
                    Keyed(
                        tuple(
                            (inner.data_key, SingleInstance(study, choice.uuid, pick.uuid))
                            for inner, pick in nested
                        )
                    ),
                )
            )
        else:
            entries.append((spec.data_key, InstanceList(study, choice.uuid)))
    return Keyed(tuple(entries))


def _match(
    specs: tuple[DataFilterSpec, ...], given: tuple[DataFilter, ...], where: str
) -> list[tuple[DataFilterSpec, DataFilter]]:
    """Pair each declared key with the viewer's choice; undeclared keys are ignored."""
    by_key = {choice.data_key: choice for choice in given}
    missing = [spec.data_key for spec in specs if spec.data_key not in by_key]
    if missing:
        raise InvalidDataFilter(
            f"this model needs {where} for the keys {', '.join(missing)}; "
            f'each as {{"dataKey": ..., "uuid": <UID>}}'
        )
    return [(spec, by_key[spec.data_key]) for spec in specs]
