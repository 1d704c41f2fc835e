"""AI results as DICOM: SEG and SR made from zhiva answers, read back with highdicom and checked
with dciodvfy."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from devtools.dicom import ct_series
from model_proxy.example_model.analysis import analyse
from model_proxy.example_model.body import EncodedInstance
from model_proxy.example_model.documents import Task, build_document
from model_proxy.example_model.instances import read_instance
from model_proxy.shared.config.schema import ModelConfig
from model_proxy.shared.dicom_results import (
    RESULT_SCHEME,
    ModelIdentity,
    annotations_to_sr,
    display_colour,
    identity_of,
    predictions_to_sr,
    segmentation_to_seg,
)
from model_proxy.shared.errors import UnconvertibleAnswer, error_from_code
from tests.support.dciodvfy import validate

STUDY = "1.2.826.0.1.3680043.8.498.13"
IDENTITY = ModelIdentity("Threshold finder", "2.1.0", "Example Labs")


def _datasets(slices: int = 3, seed: int = 1) -> list[Dataset]:
    files = ct_series(study_uid=STUDY, slices=slices, rows=24, columns=20, seed=seed)
    return [pydicom.dcmread(io.BytesIO(f.data)) for f in files]


def _example_answer(task: Task, sources: Sequence[Dataset]) -> dict[str, Any]:
    """The example model's own answer for ``sources``, as JSON would carry it."""
    findings = []
    for ds in sources:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        findings.append(analyse(read_instance(EncodedInstance("test", buffer.getvalue()))))
    document = build_document(task, findings, color="rgb(255, 64, 64)", class_name="Dense")
    return _plain(document)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@pytest.fixture()
def sources() -> list[Dataset]:
    return _datasets()


def test_seg_masks_references_and_model_read_back(sources: list[Dataset], tmp_path: Path) -> None:
    answer = _example_answer(Task.SEGMENTATION, sources)
    seg = hd.seg.Segmentation.from_dataset(segmentation_to_seg(answer, sources, IDENTITY))
    series = answer[STUDY][str(sources[0].SeriesInstanceUID)]
    for ds in sources:
        expected = np.asarray(series[str(ds.SOPInstanceUID)]["segments"][0]["points"]) != 0
        got = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID)], segment_numbers=[1]
        )[0, :, :, 0]
        assert np.array_equal(got, expected)
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in sources}
    assert seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == STUDY
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Dense"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("Threshold finder", "2.1.0")
    assert seg.ManufacturerModelName == "Threshold finder"
    assert seg.SoftwareVersions == "2.1.0"
    assert seg.Manufacturer == "Example Labs"
    assert ("Example Labs", "Threshold finder", "2.1.0") in {
        (item.Manufacturer, item.ManufacturerModelName, item.SoftwareVersions)
        for item in seg.ContributingEquipmentSequence
    }
    expected_lab = display_colour("rgb(255, 64, 64)")
    assert expected_lab is not None
    assert list(segment.RecommendedDisplayCIELabValue) == list(expected_lab.value)
    assert validate(seg, tmp_path) == []


def test_seg_one_segment_per_class_and_empty_frames_omitted(
    sources: list[Dataset], tmp_path: Path
) -> None:
    shape = (24, 20)
    left, right, nothing = np.zeros(shape, int), np.zeros(shape, int), np.zeros(shape, int)
    left[2:6, 2:6] = 1
    right[10:14, 10:18] = 1
    series = str(sources[0].SeriesInstanceUID)
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    answer = {
        STUDY: {
            series: {
                uids[0]: {
                    "segments": [
                        {"points": left.tolist(), "className": "Liver", "color": "#00ff00"},
                        {"points": right.tolist(), "className": "Spleen", "color": "no colour"},
                    ]
                },
                uids[1]: {"segments": [{"points": nothing.tolist(), "className": "Liver"}]},
            }
        }
    }
    dataset = segmentation_to_seg(answer, sources, IDENTITY)
    seg = hd.seg.Segmentation.from_dataset(dataset)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Liver", "Spleen"]
    assert int(seg.NumberOfFrames) == 2  # only the marked frames of the first instance
    assert "RecommendedDisplayCIELabValue" not in seg.SegmentSequence[1]
    got = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uids[0]], segment_numbers=[1, 2]
    )[0]
    assert np.array_equal(got[:, :, 0], left != 0)
    assert np.array_equal(got[:, :, 1], right != 0)
    assert validate(dataset, tmp_path) == []


def _incomplete(sources: list[Dataset]) -> list[Dataset]:
    for index, ds in enumerate(sources):
        for keyword in ("PatientName", "PatientID", "StudyID"):
            if index % 2:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, "")
        ds.AccessionNumber = ""
        if "ReferringPhysicianName" in ds:
            del ds.ReferringPhysicianName
    return sources


def test_incomplete_patient_and_study_headers_still_give_valid_objects(tmp_path: Path) -> None:
    sources = _incomplete(_datasets())
    for task, make in (
        (Task.SEGMENTATION, segmentation_to_seg),
        (Task.ANNOTATION, annotations_to_sr),
        (Task.PREDICTION, predictions_to_sr),
    ):
        made = make(_example_answer(task, sources), sources, IDENTITY)
        assert made.PatientID == ""
        assert validate(made, tmp_path) == [], task
    assert "PatientID" not in sources[1]  # the caller's datasets are not changed


def _non_image(sources: list[Dataset]) -> Dataset:
    sr = Dataset()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    sr.SOPInstanceUID = "1.2.3.999"
    sr.StudyInstanceUID = STUDY
    sr.SeriesInstanceUID = "1.2.3.998"
    sr.Modality = "SR"
    return sr


def test_non_image_sources_are_never_referenced(sources: list[Dataset]) -> None:
    earlier_seg = segmentation_to_seg(
        _example_answer(Task.SEGMENTATION, sources), sources, IDENTITY
    )
    mixed = [*sources, _non_image(sources), earlier_seg]
    answer = _example_answer(Task.PREDICTION, sources)
    sr = hd.sr.srread(io.BytesIO(_bytes(predictions_to_sr(answer, mixed, IDENTITY))))
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {str(ds.SOPInstanceUID) for ds in sources}


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_annotation_sr_has_one_closed_polyline_per_roi(
    sources: list[Dataset], tmp_path: Path
) -> None:
    answer = _example_answer(Task.ANNOTATION, sources)
    dataset = annotations_to_sr(answer, sources, IDENTITY)
    assert validate(dataset, tmp_path) == []
    report = hd.sr.srread(io.BytesIO(_bytes(dataset)))
    groups = report.content.get_planar_roi_measurement_groups()
    series = answer[STUDY][str(sources[0].SeriesInstanceUID)]
    expected = {
        uid: frame["rois"][0]["points"]
        for uid, frame in series.items()
        if uid != "metadata" and frame["rois"]
    }
    assert len(groups) == len(expected) > 0
    for group in groups:
        region = group.roi
        assert region is not None
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        uid = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        points = region.value
        assert np.array_equal(points[0], points[-1])  # closed
        assert np.array_equal(points[:-1], np.asarray(expected[uid], dtype=float))
        algorithm = [
            item.TextValue
            for item in group[0].ContentSequence
            if item.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Name"
        ]
        assert algorithm == ["Threshold finder"]


def test_prediction_sr_measurements_have_ucum_units(sources: list[Dataset], tmp_path: Path) -> None:
    series = str(sources[0].SeriesInstanceUID)
    instance = str(sources[0].SOPInstanceUID)
    answer = {
        STUDY: {
            "metadata": [{"dataType": "text", "value": "likely benign", "title": "Impression"}],
            series: {
                "metadata": [
                    {"dataType": "text", "value": "345.8 cm³", "title": "Volume"},
                    {"dataType": "percentage", "value": 12.5, "title": "Share"},
                    {"dataType": "date", "value": "2024-01-02", "title": "Scan date"},
                ],
                instance: {"metadata": [{"dataType": "number", "value": 7, "title": "Voxels"}]},
            },
        }
    }
    dataset = predictions_to_sr(answer, sources, IDENTITY)
    assert validate(dataset, tmp_path) == []
    measured = {}
    texts = []
    referenced = {}
    for group in dataset.ContentSequence[-1].ContentSequence:
        for item in group.ContentSequence:
            name = item.ConceptNameCodeSequence[0]
            if item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                unit = value.MeasurementUnitsCodeSequence[0]
                measured[name.CodeMeaning] = (
                    float(value.NumericValue),
                    unit.CodingSchemeDesignator,
                    unit.CodeValue,
                )
            elif item.ValueType == "TEXT" and name.CodeValue == "C0034375":
                texts.append(item.TextValue)
            elif item.ValueType == "CODE" and name.CodeMeaning == "Finding":
                finding = item.ConceptCodeSequence[0]
                assert finding.CodingSchemeDesignator == RESULT_SCHEME
                title = finding.CodeMeaning
                referenced[title] = {
                    i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                    for i in group.ContentSequence
                    if i.ValueType == "IMAGE"
                }
    assert measured == {
        "Volume": (345.8, "UCUM", "cm3"),
        "Share": (12.5, "UCUM", "%"),
        "Voxels": (7.0, "UCUM", "1"),
    }
    assert sorted(texts) == ["Impression: likely benign", "Scan date: 2024-01-02"]
    assert referenced["Voxels"] == {instance}
    assert referenced["Volume"] == {str(ds.SOPInstanceUID) for ds in sources}


def test_an_answer_naming_an_instance_not_sent_is_refused(sources: list[Dataset]) -> None:
    series = str(sources[0].SeriesInstanceUID)
    answer = {STUDY: {series: {"1.2.3.4.5": {"rois": [{"points": [[0, 0], [1, 0], [1, 1]]}]}}}}
    with pytest.raises(UnconvertibleAnswer) as caught:
        annotations_to_sr(answer, sources, IDENTITY)
    assert caught.value.code == "model_answer_unconvertible"
    assert isinstance(error_from_code(caught.value.code, "x"), UnconvertibleAnswer)


def test_a_mask_of_the_wrong_shape_is_refused(sources: list[Dataset]) -> None:
    series = str(sources[0].SeriesInstanceUID)
    uid = str(sources[0].SOPInstanceUID)
    answer = {STUDY: {series: {uid: {"segments": [{"points": [[1, 0], [0, 1]]}]}}}}
    with pytest.raises(UnconvertibleAnswer, match="24 x 20"):
        segmentation_to_seg(answer, sources, IDENTITY)


@pytest.mark.parametrize(
    ("text", "rgb"),
    [("rgb(255, 64, 64)", (255, 64, 64)), ("#00ff00", (0, 255, 0)), ("red", (255, 0, 0))],
)
def test_readable_colours(text: str, rgb: tuple[int, int, int]) -> None:
    colour = display_colour(text)
    assert colour is not None
    assert colour.to_rgb() == rgb


@pytest.mark.parametrize("text", [None, 3, "rgb(300, 0, 0)", "not a colour"])
def test_unreadable_colours(text: object) -> None:
    assert display_colour(text) is None


def test_model_identity_from_models_json() -> None:
    entry = {"uri": "http://m/", "task": "segmentation", "supports": ["/studies"]}
    assert identity_of("liver", ModelConfig.model_validate(entry)) == ModelIdentity(
        "liver", "unknown", "unknown"
    )
    named = {**entry, "name": "Liver AI", "version": "1.0", "manufacturer": "Acme"}
    assert identity_of("liver", ModelConfig.model_validate(named)) == ModelIdentity(
        "Liver AI", "1.0", "Acme"
    )


@pytest.mark.parametrize(
    ("field", "value"), [("name", "x" * 65), ("version", "a\\b"), ("manufacturer", "  ")]
)
def test_model_identity_fields_are_dicom_lo(field: str, value: str) -> None:
    entry = {"uri": "http://m/", "task": "segmentation", "supports": ["/studies"], field: value}
    with pytest.raises(ValueError, match=field):
        ModelConfig.model_validate(entry)
