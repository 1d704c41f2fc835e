"""The example model API, in process: every body shape, the three tasks and the test options."""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from devtools.dicom import DicomFile, describe, part10_bytes, sample_file
from model_proxy.example_model.__main__ import main
from model_proxy.example_model.analysis import convex_hull
from model_proxy.example_model.app import create_app
from model_proxy.example_model.settings import ExampleModelSettings

with warnings.catch_warnings():
    # starlette asks for its httpx2 fork, which is not installed here; httpx works the same.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from fastapi.testclient import TestClient

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")


@dataclass(frozen=True)
class Dicom(DicomFile):
    """A DICOM Part-10 file and what the test needs to know about it."""

    @property
    def instance_string(self) -> str:
        """The model contract's encoding, written the plain way (the model must decode it)."""
        return json.dumps(list(self.data))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def values(self) -> npt.NDArray[np.float64]:
        """Modality values of the first frame, computed independently of the model."""
        ds = pydicom.dcmread(io.BytesIO(self.data))
        pixels = ds.pixel_array
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            pixels = pixels[0]
        return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)

    def expected_mask(self, threshold: float | None = None) -> npt.NDArray[np.uint8]:
        values = self.values()
        limit = values.mean() if threshold is None else threshold
        return (values > limit).astype(np.uint8)


def _describe(data: bytes) -> Dicom:
    return Dicom(**asdict(describe(data)))


def _sample(name: str) -> Dicom:
    return _describe(sample_file(name).data)


def _copy_in_series(original: Dicom, series_uid: str, index: int) -> Dicom:
    """``original`` as another instance of ``series_uid`` with shifted pixels."""
    ds = pydicom.dcmread(io.BytesIO(original.data))
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(index)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = index + 1
    ds.PixelData = np.roll(ds.pixel_array, 7 * (index + 1), axis=1).tobytes()
    return _describe(part10_bytes(ds))


def _multi_frame(rows: int = 12, columns: int = 20, frames: int = 3) -> Dicom:
    """Unsigned 16-bit frames with a rescale; frame 0 is a gradient, the others all high."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -100
    pixels = np.full((frames, rows, columns), 4000, dtype="<u2")
    pixels[0] = np.arange(rows * columns, dtype="<u2").reshape(rows, columns)
    ds.PixelData = pixels.tobytes()
    return _describe(part10_bytes(ds))


@pytest.fixture(scope="module")
def ct() -> Dicom:
    return _sample("CT_small.dcm")


@pytest.fixture(scope="module")
def mr() -> Dicom:
    return _sample("MR_small.dcm")


@pytest.fixture(scope="module")
def ct_series(ct: Dicom) -> list[Dicom]:
    """Three instances of one new series in CT_small's study."""
    series_uid = generate_uid(entropy_srcs=["example-model-test", "series"])
    return [_copy_in_series(ct, series_uid, index) for index in range(3)]


@pytest.fixture()
def client() -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


def post(client: TestClient, path: str, body: object, **params: Any) -> Any:
    response = client.post(path, content=json.dumps(body), params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def frames_of(document: dict[str, Any], item: Dicom) -> dict[str, Any]:
    """The instance entries of ``item``'s series (without the series ``metadata``)."""
    series = document[item.study_uid][item.series_uid]
    return {key: value for key, value in series.items() if key != "metadata"}


def mask_of(document: dict[str, Any], item: Dicom) -> npt.NDArray[np.uint8]:
    [segment] = document[item.study_uid][item.series_uid][item.sop_uid]["segments"]
    return np.array(segment["points"], dtype=np.uint8)


def received(client: TestClient) -> dict[str, Any]:
    response = client.get("/_debug/received")
    assert response.status_code == 200
    log: dict[str, Any] = response.json()
    return log


# --- health -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/health"])
def test_health_answers_ok(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- segmentation -------------------------------------------------------------------------------


def test_series_segmentation_masks_pixels_above_each_instances_mean(
    client: TestClient, ct_series: list[Dicom]
) -> None:
    document = post(client, "/segmentation", [item.instance_string for item in ct_series])

    first = ct_series[0]
    assert list(document) == [first.study_uid]
    assert list(document[first.study_uid]) == [first.series_uid]
    assert set(frames_of(document, first)) == {item.sop_uid for item in ct_series}
    for item in ct_series:
        mask = mask_of(document, item)
        assert mask.shape == (item.rows, item.columns)
        assert set(np.unique(mask)) <= {0, 1}
        assert int(mask.sum()) == int((item.values() > item.values().mean()).sum())
        assert np.array_equal(mask, item.expected_mask())
        [segment] = document[item.study_uid][item.series_uid][item.sop_uid]["segments"]
        assert segment["color"] == "rgb(255, 64, 64)"
        assert segment["className"] == "above-threshold"
        assert isinstance(segment["description"], str)


def test_the_threshold_parameter_replaces_the_mean(client: TestClient, ct: Dicom) -> None:
    document = post(client, "/segmentation", [ct.instance_string], threshold=100.5)

    mask = mask_of(document, ct)
    assert int(mask.sum()) == int((ct.values() > 100.5).sum())
    assert np.array_equal(mask, ct.expected_mask(100.5))
    assert not np.array_equal(mask, ct.expected_mask())


def test_modality_units_are_used(client: TestClient, ct: Dicom) -> None:
    ds = pydicom.dcmread(io.BytesIO(ct.data))
    assert float(ds.RescaleIntercept) == -1024.0  # CT_small stores values + 1024
    raw_mean = float(ds.pixel_array.mean())
    document = post(client, "/segmentation", ct.instance_string, threshold=raw_mean)

    assert np.array_equal(mask_of(document, ct), ct.expected_mask(raw_mean))
    assert int(mask_of(document, ct).sum()) != int((ds.pixel_array > raw_mean).sum())


def test_instance_level_single_string_body(client: TestClient, mr: Dicom) -> None:
    document = post(client, "/segmentation", mr.instance_string)

    assert list(frames_of(document, mr)) == [mr.sop_uid]
    mask = mask_of(document, mr)
    assert mask.shape == (mr.rows, mr.columns) == (64, 64)
    assert np.array_equal(mask, mr.expected_mask())
    assert received(client)["recent"][-1]["shape"] == "string"


def test_a_multi_frame_instance_is_masked_by_its_first_frame(client: TestClient) -> None:
    item = _multi_frame()
    document = post(client, "/segmentation", item.instance_string)

    mask = mask_of(document, item)
    assert mask.shape == (12, 20)
    assert np.array_equal(mask, item.expected_mask())
    assert int(mask.sum()) == 12 * 20 // 2  # a gradient: half the pixels lie above its mean


def test_a_study_body_is_grouped_by_the_uids_in_the_files(
    client: TestClient, ct: Dicom, ct_series: list[Dicom]
) -> None:
    everything = [ct, *ct_series]
    document = post(client, "/segmentation", [item.instance_string for item in everything])

    assert set(document[ct.study_uid]) == {ct.series_uid, ct_series[0].series_uid}
    for item in everything:
        assert mask_of(document, item).shape == (item.rows, item.columns)


# --- data filters (keyed bodies) ----------------------------------------------------------------


def test_keyed_bodies_are_merged_into_one_result(
    client: TestClient, ct: Dicom, mr: Dicom, ct_series: list[Dicom]
) -> None:
    body = {
        "pre": {
            "data": {
                "slice": {"data": ct_series[1].instance_string},
                "other": {"data": [ct_series[2].instance_string]},
            }
        },
        "post": {"data": [ct.instance_string]},
        "brain": {"data": mr.instance_string, "uuid": mr.series_uid},
    }
    document = post(client, "/segmentation", body)

    for item in (ct_series[1], ct_series[2], ct, mr):
        assert np.array_equal(mask_of(document, item), item.expected_mask())
    assert set(frames_of(document, ct_series[0])) == {ct_series[1].sop_uid, ct_series[2].sop_uid}
    [call] = received(client)["recent"]
    assert call["shape"] == "keyed"
    assert call["keys"] == ["pre", "post", "brain"]
    assert [entry["dataKey"] for entry in call["instances"]] == [
        "pre/slice",
        "pre/other",
        "post",
        "brain",
    ]
    assert [entry["sopInstanceUID"] for entry in call["instances"]] == [
        ct_series[1].sop_uid,
        ct_series[2].sop_uid,
        ct.sop_uid,
        mr.sop_uid,
    ]


# --- annotation ---------------------------------------------------------------------------------


def _inside_convex_polygon(polygon: npt.NDArray[np.int64], points: npt.NDArray[np.int64]) -> bool:
    """All ``points`` (x, y) on or inside the convex ``polygon``, whatever its orientation."""
    signs = []
    for start, end in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        edge = end - start
        rel = points - start
        signs.append(edge[0] * rel[:, 1] - edge[1] * rel[:, 0])
    crosses = np.stack(signs)
    return bool(np.all((crosses >= 0).all(axis=0) | (crosses <= 0).all(axis=0)))


def test_annotation_outlines_the_marked_pixels(client: TestClient, ct: Dicom, mr: Dicom) -> None:
    document = post(client, "/annotation", [ct.instance_string, mr.instance_string])

    for item in (ct, mr):
        frame = document[item.study_uid][item.series_uid][item.sop_uid]
        [roi] = frame["rois"]
        assert roi["className"] == "above-threshold"
        assert isinstance(roi["color"], str)
        polygon = np.array(roi["points"], dtype=np.int64)
        assert len(polygon) >= 3
        assert all(0 <= x < item.columns and 0 <= y < item.rows for x, y in roi["points"])
        mask = item.expected_mask()
        assert all(mask[y, x] == 1 for x, y in roi["points"])  # vertices are marked pixels
        ys, xs = np.nonzero(mask)
        assert _inside_convex_polygon(polygon, np.stack([xs, ys], axis=1))


def test_annotation_of_an_empty_mask_has_no_rois(client: TestClient, mr: Dicom) -> None:
    document = post(client, "/annotation", [mr.instance_string], threshold=1e9)

    assert document[mr.study_uid][mr.series_uid][mr.sop_uid] == {"rois": []}


def test_convex_hull_of_simple_shapes() -> None:
    mask = np.zeros((6, 8), dtype=np.uint8)
    assert convex_hull(mask) == []
    mask[2, 3] = 1
    assert convex_hull(mask) == [(3, 2)]
    mask[2, 3:7] = 1  # a horizontal line: its two ends
    assert convex_hull(mask) == [(3, 2), (6, 2)]
    mask[1:5, 2:6] = 1
    assert sorted(convex_hull(mask)) == [(2, 1), (2, 4), (5, 1), (5, 4), (6, 2)]


# --- prediction ---------------------------------------------------------------------------------


def test_prediction_counts_voxels_and_measures_the_series_volume(
    client: TestClient, ct_series: list[Dicom]
) -> None:
    document = post(client, "/prediction", [item.instance_string for item in ct_series])

    first = ct_series[0]
    for item in ct_series:
        [number] = document[item.study_uid][item.series_uid][item.sop_uid]["metadata"]
        assert number["dataType"] == "number"
        assert number["title"] == "Voxels above threshold"
        assert number["value"] == int(item.expected_mask().sum())

    above = sum(int(item.expected_mask().sum()) for item in ct_series)
    ds = pydicom.dcmread(io.BytesIO(first.data), stop_before_pixels=True)
    voxel_mm3 = float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1]) * float(ds.SliceThickness)
    volume, share = document[first.study_uid][first.series_uid]["metadata"]
    assert volume["dataType"] == "text"
    assert volume["title"] == "Volume above threshold"
    assert volume["value"] == f"{above * voxel_mm3 / 1000:.2f} cm³"
    assert share["dataType"] == "percentage"
    total = sum(item.rows * item.columns for item in ct_series)
    assert share["value"] == pytest.approx(100 * above / total, abs=0.01)


def test_missing_spacing_counts_as_one_millimetre(client: TestClient) -> None:
    item = _multi_frame()  # no PixelSpacing, no SliceThickness
    document = post(client, "/prediction", [item.instance_string])

    volume = document[item.study_uid][item.series_uid]["metadata"][0]
    assert volume["value"] == f"{120 / 1000:.2f} cm³"


def test_every_metadata_object_follows_the_contract(client: TestClient, ct: Dicom) -> None:
    for task in ("segmentation", "annotation", "prediction"):
        document = post(client, f"/{task}", [ct.instance_string])
        series = document[ct.study_uid][ct.series_uid]
        entries = list(series["metadata"]) + list(series[ct.sop_uid].get("metadata", []))
        assert entries
        for entry in entries:
            assert entry["dataType"] in {"percentage", "date", "text", "number"}
            assert isinstance(entry["value"], str | int | float)
            assert isinstance(entry["title"], str)
            assert set(entry) <= {"dataType", "value", "title", "description"}


# --- options for tests: wrap, fail, delay -------------------------------------------------------


def test_wrap_answers_with_the_document_as_a_json_string(client: TestClient, mr: Dicom) -> None:
    plain = post(client, "/segmentation", [mr.instance_string])
    wrapped = post(client, "/segmentation", [mr.instance_string], wrap="true")

    assert isinstance(wrapped, str)
    assert orjson.loads(wrapped) == plain


@pytest.mark.parametrize("status", [500, 503, 404])
def test_fail_answers_with_the_asked_status(client: TestClient, mr: Dicom, status: int) -> None:
    response = client.post(
        "/prediction", content=json.dumps([mr.instance_string]), params={"fail": status}
    )

    assert response.status_code == status
    assert response.json() == {"detail": "simulated failure"}
    assert received(client)["requests"] == 1


def test_delay_waits_before_answering(client: TestClient, mr: Dicom) -> None:
    started = time.monotonic()
    post(client, "/prediction", mr.instance_string, delay=0.3)
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    "params",
    [
        {"delay": "-1"},
        {"delay": "soon"},
        {"threshold": "high"},
        {"threshold": "nan"},
        {"fail": "200"},
    ],
)
def test_bad_query_parameters_are_422(
    client: TestClient, mr: Dicom, params: dict[str, str]
) -> None:
    response = client.post("/segmentation", content=json.dumps(mr.instance_string), params=params)

    assert response.status_code == 422
    assert "detail" in response.json()


# --- malformed bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"12", "neither"),
        (b"[]", "no instances"),
        (b"[[0, 1, 2]]", "$[0] is not an instance string"),
        (b'["[0, 1, 2]", 5]', "$[1] is not an instance string"),
        (b'"not an array"', "not the JSON text of a byte array"),
        (b'"[0, 256]"', "other than byte values 0-255"),
        (b'"[0, -1]"', "other than byte values 0-255"),
        (b'"[0, 1.5]"', "other than byte values"),
        (b'"[[0], [1]]"', "other than byte values"),
        (b'"[]"', "non-empty"),
        (b'"[0, 1, 2, 3]"', "not a readable DICOM"),
        (b'{"series-one": ["[0]"]}', '$["series-one"] is not an object with a "data" field'),
        (b'{"series-one": {"uuid": "1.2"}}', '"data" field'),
        (b'{"a": {"data": {"b": {"data": 7}}}}', '$["a"].data["b"].data is neither'),
    ],
)
def test_a_malformed_body_is_422_saying_what_is_wrong(
    client: TestClient, body: bytes, says: str
) -> None:
    response = client.post("/segmentation", content=body)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert says in detail
    assert received(client)["requests"] == 0


def test_an_instance_without_pixels_is_422(client: TestClient, mr: Dicom) -> None:
    ds = pydicom.dcmread(io.BytesIO(mr.data))
    del ds.PixelData
    body = json.dumps(list(part10_bytes(ds)))

    response = client.post("/prediction", content=json.dumps(body))

    assert response.status_code == 422
    assert "no pixel data" in response.json()["detail"]


def test_an_instance_without_a_uid_is_422(client: TestClient, mr: Dicom) -> None:
    ds = pydicom.dcmread(io.BytesIO(mr.data))
    del ds.StudyInstanceUID
    body = json.dumps(list(part10_bytes(ds)))

    response = client.post("/prediction", content=json.dumps([body]))

    assert response.status_code == 422
    assert response.json()["detail"] == "$[0] has no StudyInstanceUID"


def test_pixels_that_cannot_be_decoded_are_422(client: TestClient, mr: Dicom) -> None:
    ds = pydicom.dcmread(io.BytesIO(mr.data))
    ds.PixelData = ds.PixelData[:100]  # far fewer bytes than Rows x Columns need
    body = json.dumps(list(part10_bytes(ds)))

    response = client.post("/segmentation", content=json.dumps(body))

    assert response.status_code == 422
    assert f"cannot decode the pixels of instance {mr.sop_uid}" in response.json()["detail"]


def test_a_colour_instance_is_masked_by_the_mean_of_its_samples(client: TestClient) -> None:
    grey = _multi_frame(frames=1)
    ds = pydicom.dcmread(io.BytesIO(grey.data))
    del ds.NumberOfFrames, ds.RescaleSlope, ds.RescaleIntercept
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    rgb = np.zeros((12, 20, 3), dtype=np.uint8)
    rgb[:, 10:, 0] = 240  # the right half is red
    ds.PixelData = rgb.tobytes()
    item = _describe(part10_bytes(ds))

    document = post(client, "/segmentation", item.instance_string)

    mask = mask_of(document, item)
    assert mask.shape == (12, 20)
    assert mask[:, 10:].all()
    assert not mask[:, :10].any()


def test_settings_reject_an_empty_log() -> None:
    with pytest.raises(ValueError, match="recent_limit"):
        ExampleModelSettings(recent_limit=0)


# --- the received log (a testing aid) -----------------------------------------------------------


def test_the_received_log_describes_each_request(
    client: TestClient, ct_series: list[Dicom], mr: Dicom
) -> None:
    post(client, "/annotation", [item.instance_string for item in ct_series])
    post(client, "/prediction", mr.instance_string)

    log = received(client)
    assert log["requests"] == 2
    first, second = log["recent"]
    assert first["path"] == "/annotation"
    assert first["shape"] == "array"
    assert first["keys"] == []
    assert first["instances"] == [
        {
            "sopInstanceUID": item.sop_uid,
            "sha256": item.sha256,
            "size": len(item.data),
            "dataKey": None,
        }
        for item in ct_series
    ]
    assert second["path"] == "/prediction"
    assert second["shape"] == "string"
    assert second["instances"][0]["sha256"] == hashlib.sha256(mr.data).hexdigest()


def test_reset_empties_the_received_log(client: TestClient, mr: Dicom) -> None:
    post(client, "/segmentation", mr.instance_string)
    assert received(client)["requests"] == 1

    response = client.post("/_debug/reset")

    assert response.status_code == 200
    assert received(client) == {"requests": 0, "recent": []}


def test_the_log_keeps_the_most_recent_requests_and_counts_all(mr: Dicom) -> None:
    with TestClient(create_app(ExampleModelSettings(recent_limit=2))) as small:
        for threshold in (1, 2, 3):
            post(small, "/prediction", mr.instance_string, threshold=threshold)
        log = received(small)
    assert log["requests"] == 3
    assert len(log["recent"]) == 2


def test_each_app_has_its_own_log(mr: Dicom) -> None:
    one, two = TestClient(create_app()), TestClient(create_app())
    post(one, "/prediction", mr.instance_string)
    assert received(one)["requests"] == 1
    assert received(two)["requests"] == 0


# --- entry point --------------------------------------------------------------------------------


def test_the_command_line_passes_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(
        "model_proxy.example_model.__main__.run", lambda host, port: calls.append((host, port))
    )

    main([])
    main(["--host", "0.0.0.0", "--port", "9000"])

    assert calls == [("127.0.0.1", 8011), ("0.0.0.0", 9000)]


# --- the multipart transport: the same answers from the files themselves -------------------------

BOUNDARY = "a-boundary-5f0c"


def multipart(*parts: tuple[bytes, str | None], boundary: str = BOUNDARY) -> bytes:
    """A multipart/related body of DICOM files, each with its data-filter key (or none)."""
    body = b""
    for data, key in parts:
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n"
        if key is not None:
            head += f"X-Model-Proxy-Data-Key: {key}\r\n"
        body += head.encode() + b"\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def post_multipart(
    client: TestClient, path: str, body: bytes, level: str = "/studies/series", **params: Any
) -> Any:
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
        "X-Model-Proxy-Level": level,
    }
    response = client.post(path, content=body, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("path", ["/segmentation", "/annotation", "/prediction"])
def test_a_multipart_body_is_answered_as_its_json_body(
    client: TestClient, path: str, ct: Dicom, ct_series: list[Dicom]
) -> None:
    everything = [ct, *ct_series]
    from_json = post(client, path, [item.instance_string for item in everything])
    from_files = post_multipart(client, path, multipart(*((i.data, None) for i in everything)))

    assert from_files == from_json
    json_call, multipart_call = received(client)["recent"]
    assert (json_call["transport"], multipart_call["transport"]) == ("json", "multipart")
    assert multipart_call["shape"] == "array"
    assert multipart_call["instances"] == json_call["instances"]


def test_a_multipart_body_is_read_as_it_streams_in(
    client: TestClient, ct_series: list[Dicom]
) -> None:
    body = multipart(*((item.data, None) for item in ct_series))
    chunks = [body[start : start + 7] for start in range(0, len(body), 7)]
    headers = {"Content-Type": f"multipart/related; boundary={BOUNDARY}"}
    response = client.post("/prediction", content=iter(chunks), headers=headers)

    assert response.status_code == 200, response.text
    assert set(frames_of(response.json(), ct_series[0])) == {i.sop_uid for i in ct_series}


def test_a_single_multipart_instance_and_keyed_parts(
    client: TestClient, ct: Dicom, mr: Dicom, ct_series: list[Dicom]
) -> None:
    level = "/studies/series/instances"
    assert post_multipart(client, "/prediction", multipart((mr.data, None)), level) == post(
        client, "/prediction", mr.instance_string
    )
    keyed = multipart(
        (ct_series[1].data, "pre/slice"), (ct.data, "post"), (mr.data, "post"), (ct.data, "brain")
    )
    document = post_multipart(client, "/segmentation", keyed, "/studies")

    for item in (ct_series[1], ct, mr):
        assert np.array_equal(mask_of(document, item), item.expected_mask())
    calls = received(client)["recent"]
    assert calls[0]["shape"] == "string"
    assert calls[2]["shape"] == "keyed"
    assert calls[2]["keys"] == ["pre", "post", "brain"]
    assert [e["dataKey"] for e in calls[2]["instances"]] == ["pre/slice", "post", "post", "brain"]


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"--x\r\n\r\nabc\r\n--x--\r\n", "multipart/related", "no boundary"),
        (b"", f"multipart/related; boundary={BOUNDARY}", "before its closing boundary"),
        (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nDICM".encode(),
            f"multipart/related; boundary={BOUNDARY}",
            "after 0 complete parts",
        ),
        (
            f"--{BOUNDARY}\r\nContent-Length: 99\r\n\r\nshort\r\n--{BOUNDARY}--\r\n" + " " * 99,
            f"multipart/related; boundary={BOUNDARY}",
            "where its Content-Length says it ends",
        ),
        (f"--{BOUNDARY}--\r\n".encode(), f"multipart/related; boundary={BOUNDARY}", "no instances"),
        (
            f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nhi\r\n--{BOUNDARY}--\r\n".encode(),
            f"multipart/related; boundary={BOUNDARY}",
            "part 1 is 'text/plain', not application/dicom",
        ),
        (
            f"--{BOUNDARY}\r\nno colon here\r\n\r\nhi\r\n--{BOUNDARY}--\r\n".encode(),
            f"multipart/related; boundary={BOUNDARY}",
            "malformed header line",
        ),
        (
            f"--{BOUNDARY}\r\n\r\nnot dicom\r\n--{BOUNDARY}--\r\n".encode(),
            f"multipart/related; boundary={BOUNDARY}",
            "part 1 is not a readable DICOM Part-10 file",
        ),
    ],
    ids=[
        "no boundary",
        "empty",
        "cut short",
        "wrong length",
        "no parts",
        "not dicom type",
        "bad header",
        "not dicom",
    ],
)
def test_a_malformed_multipart_body_is_422_saying_what_is_wrong(
    client: TestClient, body: bytes | str, content_type: str, says: str
) -> None:
    content = body.encode() if isinstance(body, str) else body
    response = client.post("/segmentation", content=content, headers={"Content-Type": content_type})

    assert response.status_code == 422
    assert says in response.json()["detail"]
    assert received(client)["requests"] == 0


def test_keys_on_some_parts_only_is_422(client: TestClient, ct: Dicom, mr: Dicom) -> None:
    body = multipart((ct.data, "post"), (mr.data, None))
    headers = {"Content-Type": f"multipart/related; boundary={BOUNDARY}"}
    response = client.post("/segmentation", content=body, headers=headers)

    assert response.status_code == 422
    assert "X-Model-Proxy-Data-Key" in response.json()["detail"]
