"""DicomWebSource's size caps, on canned WADO-RS answers served by a stand-in session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import requests

from model_proxy.shared.config import SizeLimits
from model_proxy.shared.dicomweb.auth import NoAuth
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.errors import InputTooLarge, PacsInstanceTooLarge
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

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        for at in range(0, len(self.body), CHUNK):
            self.chunks_read += 1
            yield self.body[at : at + CHUNK]

    def close(self) -> None:
        pass


@dataclass
class CannedSession:
    """Plays requests.Session: each GET answers the next canned body."""

    bodies: list[bytes]
    answered: list[CannedResponse] = field(default_factory=list)

    def get(self, url: str, **_: Any) -> CannedResponse:
        response = CannedResponse(self.bodies[len(self.answered)])
        self.answered.append(response)
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
