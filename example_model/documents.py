"""The answers of the three tasks, shaped as the viewer expects them (model-contract §3).

Every answer nests study → series → instance by the UIDs read from the files::

    {"<StudyInstanceUID>": {
        "<SeriesInstanceUID>": {
            "metadata": [<volume above threshold>, <share above threshold>],
            "<SOPInstanceUID>": <frame of the task>}}}

* segmentation frame: ``{"segments": [{"points": <Rows x Columns 0/1 mask>, ...}]}``
* annotation frame: ``{"rois": [{"points": [[x, y], ...], ...}]}`` (``[]`` when nothing is marked)
* prediction frame: ``{"metadata": [{"dataType": "number", "value": <voxels above>, ...}]}``

Masks stay numpy arrays in the document; serialise it with ``orjson.OPT_SERIALIZE_NUMPY``.
A ``metadata`` object has ``dataType`` (``percentage``, ``date``, ``text`` or ``number``),
``value``, ``title`` and optionally ``description``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from model_proxy.example_model.analysis import Finding, convex_hull

__all__ = ["Task", "build_document"]

Document = dict[str, Any]


class Task(StrEnum):
    SEGMENTATION = "segmentation"
    ANNOTATION = "annotation"
    PREDICTION = "prediction"


def build_document(
    task: Task, findings: Iterable[Finding], *, color: str, class_name: str
) -> Document:
    """The answer of ``task`` for all findings; an instance sent twice is counted once."""
    studies: dict[str, dict[str, dict[str, Finding]]] = {}
    for finding in findings:
        instance = finding.instance
        series = studies.setdefault(instance.study_uid, {}).setdefault(instance.series_uid, {})
        series[instance.sop_uid] = finding

    document: Document = {}
    for study_uid, study in studies.items():
        document[study_uid] = {
            series_uid: {
                "metadata": _series_metadata(list(series.values())),
                **{
                    sop_uid: _frame(task, finding, color, class_name)
                    for sop_uid, finding in series.items()
                },
            }
            for series_uid, series in study.items()
        }
    return document


def _frame(task: Task, finding: Finding, color: str, class_name: str) -> Document:
    if task is Task.SEGMENTATION:
        segment = {
            "points": finding.mask,
            "color": color,
            "className": class_name,
            "description": _describe_threshold(finding),
        }
        return {"segments": [segment]}
    if task is Task.ANNOTATION:
        outline = convex_hull(finding.mask)
        if not outline:
            return {"rois": []}
        roi = {
            "points": [[x, y] for x, y in outline],
            "color": color,
            "className": class_name,
            "description": f"Convex hull of the {_describe_threshold(finding)}",
        }
        return {"rois": [roi]}
    return {
        "metadata": [
            _metadata(
                "number",
                finding.voxels_above,
                "Voxels above threshold",
                _describe_threshold(finding),
            )
        ]
    }


def _series_metadata(findings: list[Finding]) -> list[Document]:
    above = sum(finding.voxels_above for finding in findings)
    total = sum(finding.voxels for finding in findings)
    volume_cm3 = sum(f.voxels_above * f.voxel_volume_mm3 for f in findings) / 1000.0
    return [
        _metadata(
            "text",
            f"{volume_cm3:.2f} cm³",
            "Volume above threshold",
            f"{above} voxels in {len(findings)} instance(s)",
        ),
        _metadata(
            "percentage",
            round(100.0 * above / total, 2) if total else 0.0,
            "Share above threshold",
            "Percentage of the series' voxels above the threshold",
        ),
    ]


def _describe_threshold(finding: Finding) -> str:
    what = "the instance's mean value" if finding.threshold_is_mean else "the threshold"
    return f"pixels above {what} {finding.threshold:.6g}"


def _metadata(data_type: str, value: str | int | float, title: str, description: str) -> Document:
    return {"dataType": data_type, "value": value, "title": title, "description": description}
