"""Walking a zhiva answer (model-contract §3): its instances' frames and its metadata entries.

The answer nests study -> series -> instance by UID, with ``metadata`` beside the UIDs at each
level. Anything that is not an object where one is expected is skipped, as the viewer does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["InstanceFrame", "MetadataEntry", "frames", "metadata_entries"]

_METADATA = "metadata"


@dataclass(frozen=True)
class InstanceFrame:
    """The answer for one instance: its ``segments`` or ``rois`` and the rest of its object."""

    study_uid: str
    series_uid: str
    sop_uid: str
    frame: Mapping[str, Any]


@dataclass(frozen=True)
class MetadataEntry:
    """One ``metadata`` object and where it sits: at study level ``series_uid`` and
    ``sop_uid`` are ``None``, at series level ``sop_uid`` is."""

    study_uid: str
    series_uid: str | None
    sop_uid: str | None
    entry: Mapping[str, Any]


def _children(level: object) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if not isinstance(level, Mapping):
        return
    for key, value in level.items():
        if key != _METADATA and isinstance(value, Mapping):
            yield str(key), value


def frames(answer: Mapping[str, Any]) -> Iterator[InstanceFrame]:
    """Every instance object of the answer, in the answer's order."""
    for study_uid, study in _children(answer):
        for series_uid, series in _children(study):
            for sop_uid, frame in _children(series):
                yield InstanceFrame(study_uid, series_uid, sop_uid, frame)


def _entries(level: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    entries = level.get(_METADATA)
    if isinstance(entries, list):
        yield from (entry for entry in entries if isinstance(entry, Mapping))


def metadata_entries(answer: Mapping[str, Any]) -> Iterator[MetadataEntry]:
    """Every ``metadata`` entry at study, series and instance level, outermost first."""
    for study_uid, study in _children(answer):
        for entry in _entries(study):
            yield MetadataEntry(study_uid, None, None, entry)
        for series_uid, series in _children(study):
            for entry in _entries(series):
                yield MetadataEntry(study_uid, series_uid, None, entry)
            for sop_uid, frame in _children(series):
                for entry in _entries(frame):
                    yield MetadataEntry(study_uid, series_uid, sop_uid, entry)
