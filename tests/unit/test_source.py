"""DicomWebSource's size caps, on canned WADO-RS answers served by a stand-in session."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import requests

from model_proxy.shared.config import SizeLimits
from model_proxy.shared.dicomweb.auth import NoAuth
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.errors import DicomNotFound, InputTooLarge, PacsFailed, PacsInstanceTooLarge
from model_proxy.shared.http import Timeouts

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
BOUNDARY = "c0ffee"
CHUNK = 64


def multipart(*parts: bytes) -> bytes:
    body = b""
    for part in parts:
        body += b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
        body += part + b"\r\n"
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


@dataclass
class CannedResponse:
    body: bytes
    chunks_read: int = 0
    status_code: int = 200
    headers: dict[str, str] = field(
        default_factory=lambda: {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        }
    )

    @property
    def raw(self) -> CannedResponse:
        return self

    def read1(self, amt: int, decode_content: bool = True) -> bytes:
        """The body a piece of ``CHUNK`` bytes at a time, as a socket would give it."""
        at = self.chunks_read * CHUNK
        if at >= len(self.body):
            return b""
        self.chunks_read += 1
        return self.body[at : at + min(CHUNK, amt)]

    def close(self) -> None:
        pass

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class CannedSession:
    """Plays requests.Session: each request answers the next canned body."""

    bodies: list[bytes]
    answered: list[CannedResponse] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def request(self, method: str, url: str, **given: Any) -> CannedResponse:
        response = CannedResponse(self.bodies[len(self.answered)])
        self.answered.append(response)
        self.urls.append(url)
        self.params.append(given.get("params"))
        return response


def source(*bodies: bytes, limits: SizeLimits | None) -> tuple[DicomWebSource, CannedSession]:
    session = CannedSession(list(bodies))
    return (
        DicomWebSource(
            SERVER,
            "http://pacs/dicom-web",
            cast(requests.Session, session),
            NoAuth(),
            Timeouts(1, 1),
            limits,
        ),
        session,
    )


def read(stream: Any) -> list[bytes]:
    with stream:
        return list(stream)


def test_instances_up_to_the_cap_are_read() -> None:
    pacs, _ = source(multipart(b"a" * 100, b"b" * 100), limits=SizeLimits(100, 10_000, 1))
    assert read(pacs.retrieve("1.2", "1.2.3")) == [b"a" * 100, b"b" * 100]


def test_an_instance_over_the_cap_fails_while_it_streams() -> None:
    big = b"x" * 10_000
    pacs, session = source(multipart(b"a", big), limits=SizeLimits(1000, 1_000_000, 1))
    with pytest.raises(PacsInstanceTooLarge) as caught:
        read(pacs.retrieve("1.2", "1.2.3"))
    assert caught.value.code == "pacs_instance_too_large"
    assert caught.value.message == (
        f"server {SERVER} sent an instance larger than 1000 bytes; raise maxInstanceBytes of the "
        "model in models.json (or MODEL_PROXY_MAX_INSTANCE_BYTES) to fetch it"
    )
    assert not caught.value.transient
    # it stopped reading soon after the cap: far from the 10,000 bytes of the instance
    assert session.answered[0].chunks_read * CHUNK < 1000 + 3 * CHUNK


def test_a_retrieve_over_the_input_cap_fails_while_it_streams() -> None:
    body = multipart(*[b"i" * 100] * 100)
    pacs, session = source(body, limits=SizeLimits(1000, 2000, 1))
    with pytest.raises(InputTooLarge) as caught:
        read(pacs.retrieve("1.2", "1.2.3"))
    assert caught.value.code == "input_too_large"
    assert "larger than 2000 bytes" in caught.value.message
    assert "maxInputBytes" in caught.value.message
    assert session.answered[0].chunks_read * CHUNK <= 2000 + CHUNK


def test_a_jobs_retrieves_share_one_input_cap() -> None:
    series = multipart(*[b"i" * 100] * 6)  # about 900 bytes each
    limits = SizeLimits(instance=1000, input=len(series) + 10, answer=1)
    plain, _ = source(series, series, limits=limits)
    assert len(read(plain.retrieve("1.2", "1.2.3"))) == 6  # each retrieve counted alone
    assert len(read(plain.retrieve("1.2", "1.2.4"))) == 6

    job, _ = source(series, series, limits=limits)
    job = job.for_job(limits)
    assert len(read(job.retrieve("1.2", "1.2.3"))) == 6
    with pytest.raises(InputTooLarge):
        read(job.retrieve("1.2", "1.2.4"))


def test_without_limits_nothing_is_capped() -> None:
    pacs, _ = source(multipart(b"x" * 100_000), limits=None)
    assert read(pacs.retrieve("1.2", "1.2.3")) == [b"x" * 100_000]


def series_list(*entries: tuple[str, str | None]) -> bytes:
    """A QIDO-RS answer listing series (UID, Modality or None when the PACS omits it)."""
    items: list[dict[str, Any]] = []
    for uid, modality in entries:
        item: dict[str, Any] = {"0020000E": {"vr": "UI", "Value": [uid]}}
        if modality is not None:
            item["00080060"] = {"vr": "CS", "Value": [modality]}
        items.append(item)
    return json.dumps(items).encode()


SKIP = frozenset({"SR", "SEG"})


def counted_series_list(*entries: tuple[str, str, int | None]) -> bytes:
    """A QIDO-RS series list with each series' NumberOfSeriesRelatedInstances (None: left out)."""
    items = json.loads(series_list(*[(uid, modality) for uid, modality, _ in entries]))
    for item, (_, _, count) in zip(items, entries, strict=True):
        if count is not None:
            item["00201209"] = {"vr": "IS", "Value": [count]}
    return json.dumps(items).encode()


def test_a_filtered_study_retrieve_counts_the_instances_of_its_kept_series() -> None:
    listed = counted_series_list(("1.2.1", "CT", None), ("1.2.2", "SEG", 1), ("1.2.3", "MR", 4))
    pacs, session = source(listed, multipart(b"ct"), multipart(b"mr"), limits=None)
    assert pacs.retrieve_study("1.2", SKIP).series_counts == (None, 4)  # CT: not given
    listed = counted_series_list(("1.2.1", "CT", 3), ("1.2.2", "SEG", 1), ("1.2.3", "MR", 4))
    pacs, session = source(listed, multipart(b"ct"), multipart(b"mr"), limits=None)
    assert pacs.retrieve_study("1.2", SKIP).series_counts == (3, 4)
    assert "00201209" in session.params[0]["includefield"]  # in the one listing query
    assert len(session.urls) == 2  # the list, then the first kept series: no count query


def test_a_study_retrieve_leaves_out_series_of_skipped_modalities() -> None:
    listed = series_list(("1.2.1", "CT"), ("1.2.2", "sr"), ("1.2.3", None), ("1.2.4", "SEG"))
    pacs, session = source(listed, multipart(b"ct1", b"ct2"), multipart(b"ot"), limits=None)
    assert read(pacs.retrieve_study("1.2", SKIP)) == [b"ct1", b"ct2", b"ot"]
    root = "http://pacs/dicom-web/studies/1.2"
    assert session.urls == [f"{root}/series", f"{root}/series/1.2.1", f"{root}/series/1.2.3"]


def test_a_study_retrieve_leaves_out_the_series_named_whatever_their_modality() -> None:
    listed = series_list(("1.2.1", "CT"), ("1.2.2", "SEG"), ("1.2.3", "CT"))
    pacs, session = source(listed, multipart(b"ct1"), limits=None)
    ours = frozenset({"1.2.2", "1.2.3"})
    assert read(pacs.retrieve_study("1.2", frozenset(), ours)) == [b"ct1"]
    assert session.urls[1:] == ["http://pacs/dicom-web/studies/1.2/series/1.2.1"]


def test_a_study_without_skipped_series_is_one_retrieve() -> None:
    listed = series_list(("1.2.1", "CT"), ("1.2.2", "MR"))
    pacs, session = source(listed, multipart(b"ct", b"mr"), limits=None)
    assert read(pacs.retrieve_study("1.2", SKIP)) == [b"ct", b"mr"]
    assert session.urls[1] == "http://pacs/dicom-web/studies/1.2"


def test_a_study_of_only_skipped_series_is_not_found() -> None:
    pacs, session = source(series_list(("1.2.2", "SR")), limits=None)
    with pytest.raises(DicomNotFound) as caught:
        pacs.retrieve_study("1.2", SKIP)
    assert caught.value.code == "dicom_not_found"
    assert "(SR)" in caught.value.message
    assert len(session.urls) == 1  # nothing retrieved


def test_a_series_list_that_is_not_dicom_json_is_a_pacs_error() -> None:
    pacs, _ = source(b'{"not": "a list of series"}', limits=None)
    with pytest.raises(PacsFailed) as caught:
        pacs.retrieve_study("1.2", SKIP)
    assert caught.value.code == "pacs_error"


def test_without_modalities_to_skip_the_study_is_not_listed() -> None:
    pacs, session = source(multipart(b"sr"), limits=None)
    assert read(pacs.retrieve_study("1.2", frozenset())) == [b"sr"]
    assert session.urls == ["http://pacs/dicom-web/studies/1.2"]


def test_the_input_cap_counts_every_series_of_a_filtered_study() -> None:
    listed = series_list(("1.2.1", "CT"), ("1.2.2", "SR"), ("1.2.3", "CT"))
    series = multipart(*[b"i" * 100] * 6)
    limits = SizeLimits(instance=1000, input=len(series) + 10, answer=1)
    pacs, _ = source(listed, series, series, limits=limits)
    with pytest.raises(InputTooLarge):
        read(pacs.retrieve_study("1.2", SKIP))
