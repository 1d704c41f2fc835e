"""The DICOM objects a job's answer becomes: the source headers kept from the streamed bytes
(bounded), the objects built per the model's ``store``, and build failures recorded, not raised."""

from __future__ import annotations

import io
import json
from typing import Any

import highdicom as hd
import numpy as np
import pydicom

from devtools.dicom import ct_series
from model_proxy.shared.config.schema import ModelConfig
from model_proxy.workers.result_objects import build_result_objects
from model_proxy.workers.source_headers import SourceHeaders

STUDY = "1.2.826.0.1.3680043.8.498.1313"
MODEL_ID = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"


def _files(seed: int = 3) -> list[bytes]:
    return [f.data for f in ct_series(study_uid=STUDY, slices=3, rows=16, columns=12, seed=seed)]


SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _by_kind(objects: dict[str, bytes]) -> dict[str, list[pydicom.Dataset]]:
    """The objects made, read back, by kind (``seg`` or ``sr``), each keyed by its own UID."""
    kinds: dict[str, list[pydicom.Dataset]] = {}
    for uid, data in objects.items():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.SOPInstanceUID == uid
        kinds.setdefault("seg" if ds.SOPClassUID == SEG_CLASS else "sr", []).append(ds)
    return kinds


def _referenced(seg: pydicom.Dataset) -> dict[str, set[str]]:
    return {
        str(series.SeriesInstanceUID): {
            str(item.ReferencedSOPInstanceUID) for item in series.ReferencedInstanceSequence
        }
        for series in seg.ReferencedSeriesSequence
    }


def _model(task: str, objects: list[str] | None) -> ModelConfig:
    entry: dict[str, Any] = {"uri": "http://m/x", "task": task, "supports": ["/studies/series"]}
    if objects is not None:
        entry["store"] = {"objects": objects}
    return ModelConfig.model_validate({**entry, "name": "Finder", "version": "1.2"})


def _headers(files: list[bytes]) -> SourceHeaders:
    kept = SourceHeaders(max_bytes=2**20)
    for data in files:
        kept(data)
    return kept


def _segmentation(headers: SourceHeaders) -> dict[str, Any]:
    study: dict[str, Any] = {"metadata": [{"title": "Volume", "value": "12.5 mL"}]}
    for ds in headers.headers:
        mask = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=int)
        mask[2:5, 3:7] = 1
        series = study.setdefault(str(ds.SeriesInstanceUID), {})
        series[str(ds.SOPInstanceUID)] = {
            "segments": [{"className": "Dense", "points": mask.tolist()}]
        }
    return {STUDY: study}


def test_headers_are_kept_without_pixels_or_the_instance_bytes() -> None:
    files = _files()
    kept = _headers([*files, b"not dicom"])
    assert [str(ds.SOPInstanceUID) for ds in kept.headers] == [
        str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID) for data in files
    ]
    assert all("PixelData" not in ds and ds.buffer is None for ds in kept.headers)
    assert kept.unreadable == 1
    assert kept.problem() is None


def test_headers_past_the_cap_are_dropped_and_the_build_says_why() -> None:
    files = _files()
    kept = SourceHeaders(max_bytes=1000)
    for data in files:
        kept(data)
    assert kept.headers == []
    problem = kept.problem()
    assert problem is not None and "MODEL_PROXY_MAX_SOURCE_HEADER_BYTES" in problem
    model = _model("segmentation", ["seg"])
    made = build_result_objects("j", b"{}", kept.headers, MODEL_ID, model, 2**30, problem)
    assert made.objects == {}
    assert made.error is not None and made.error.code == "model_answer_unconvertible"


def test_a_segmentation_answer_becomes_a_seg_that_highdicom_reads() -> None:
    kept = _headers(_files())
    answer = json.dumps(_segmentation(kept)).encode()
    made = build_result_objects(
        "j", answer, kept.headers, MODEL_ID, _model("segmentation", ["seg", "sr"]), 2**30
    )
    assert made.error is None
    kinds = _by_kind(made.objects)
    assert sorted(kinds) == ["seg", "sr"] and len(kinds["seg"]) == len(kinds["sr"]) == 1
    seg = hd.seg.Segmentation.from_dataset(kinds["seg"][0])
    assert seg.SegmentSequence[0].SegmentLabel == "Dense"
    series_uid = str(kept.headers[0].SeriesInstanceUID)
    assert _referenced(seg) == {series_uid: {str(ds.SOPInstanceUID) for ds in kept.headers}}


def test_a_study_segmented_in_two_series_makes_a_seg_per_series() -> None:
    kept = _headers([*_files(3), *_files(4)])
    answer = json.dumps(_segmentation(kept)).encode()
    made = build_result_objects(
        "j", answer, kept.headers, MODEL_ID, _model("segmentation", ["seg"]), 2**30
    )
    assert made.error is None
    segs = _by_kind(made.objects)["seg"]
    expected: dict[str, set[str]] = {}
    for ds in kept.headers:
        expected.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
    assert len(expected) == 2
    assert [_referenced(seg) for seg in segs] == [{uid: sops} for uid, sops in expected.items()]
    assert len({str(seg.SeriesInstanceUID) for seg in segs}) == 2


def test_the_cap_bounds_a_jobs_objects_together() -> None:
    kept = _headers([*_files(3), *_files(4)])
    answer = json.dumps(_segmentation(kept)).encode()
    model = _model("segmentation", ["seg"])
    alone = build_result_objects("j", answer, kept.headers, MODEL_ID, model, 2**30)
    sizes = sorted(len(data) for data in alone.objects.values())
    assert len(sizes) == 2
    # room for either object but not both: their sizes vary by a few bytes from build to
    # build (UIDs and times are new each time), far less than half an object
    cap = sum(sizes) - sizes[0] // 2
    made = build_result_objects("j", answer, kept.headers, MODEL_ID, model, cap)
    assert len(made.objects) == 1
    assert made.error is not None and "MODEL_PROXY_MAX_RESULT_OBJECT_BYTES" in made.error.message


def test_a_failed_build_is_recorded_and_the_others_are_kept() -> None:
    kept = _headers(_files())
    answer = _segmentation(kept)
    study = answer[STUDY]
    series = study[str(kept.headers[0].SeriesInstanceUID)]
    series["1.2.3.999"] = {"segments": []}  # an instance that was not sent
    made = build_result_objects(
        "j",
        json.dumps(answer).encode(),
        kept.headers,
        MODEL_ID,
        _model("segmentation", ["seg", "sr"]),
        2**30,
    )
    assert sorted(_by_kind(made.objects)) == ["sr"]
    assert made.error is not None
    assert made.error.code == "model_answer_unconvertible"
    assert "1.2.3.999" in made.error.message


def test_objects_over_the_cap_and_answers_not_json_are_errors_not_exceptions() -> None:
    kept = _headers(_files())
    model = _model("segmentation", ["seg"])
    answer = json.dumps(_segmentation(kept)).encode()
    over = build_result_objects("j", answer, kept.headers, MODEL_ID, model, 100)
    assert over.objects == {}
    assert over.error is not None and "MODEL_PROXY_MAX_RESULT_OBJECT_BYTES" in over.error.message
    garbled = build_result_objects("j", b"[1, 2", kept.headers, MODEL_ID, model, 2**30)
    assert garbled.error is not None and garbled.error.message == "the model's answer is not JSON"


def test_an_answer_with_nothing_to_report_gives_no_sr() -> None:
    kept = _headers(_files())
    answer = _segmentation(kept)
    del answer[STUDY]["metadata"]
    made = build_result_objects(
        "j",
        json.dumps(answer).encode(),
        kept.headers,
        MODEL_ID,
        _model("prediction", ["sr"]),
        2**30,
    )
    assert made.objects == {}
    assert made.error is not None and "no ROI and no metadata" in made.error.message


def test_a_model_without_store_makes_nothing() -> None:
    kept = _headers(_files())
    answer = json.dumps(_segmentation(kept)).encode()
    made = build_result_objects(
        "j", answer, kept.headers, MODEL_ID, _model("segmentation", None), 2**30
    )
    assert made.objects == {} and made.error is None
