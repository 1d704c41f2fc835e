"""A job's several DICOM objects answered as ``multipart/related`` (``broker/answers.py``):
streamed, each object read from Redis only as its part is sent."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

import pytest

from model_proxy.broker.answers import object_parts
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.dicomweb.multipart import iter_parts
from model_proxy.shared.errors import ResultExpired
from model_proxy.shared.jobs import JobOutput

BOUNDARY = "b0und"
OUTPUTS = [
    JobOutput(format="seg", series_instance_uid=f"1.2.{n}", sop_instance_uid=f"1.2.{n}.1")
    for n in range(3)
]


class _Objects:
    """The job store's object reads, counted."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    async def get_object(self, job_id: str, name: str) -> bytes | None:
        self.reads.append(name)
        return self.objects.get(name)


def _services(store: _Objects) -> BrokerServices:
    return cast(BrokerServices, SimpleNamespace(jobs=store))


def test_each_object_is_read_only_when_its_part_is_sent() -> None:
    store = _Objects({output.key: f"DICM {output.key}".encode() for output in OUTPUTS})

    async def main() -> None:
        body = object_parts(_services(store), "j", OUTPUTS, BOUNDARY)
        chunks = []
        for part in range(3):
            chunks.append(await anext(body))  # the part's boundary and headers
            assert store.reads == [output.key for output in OUTPUTS[: part + 1]]
            chunks += [await anext(body), await anext(body)]  # its object, its CRLF
            assert len(store.reads) == part + 1
        chunks.append(await anext(body))
        with pytest.raises(StopAsyncIteration):
            await anext(body)
        assert chunks[1] is store.objects[OUTPUTS[0].key]  # sent as stored, not copied
        whole = b"".join(chunks)
        assert list(iter_parts([whole], BOUNDARY.encode())) == list(store.objects.values())
        assert whole.endswith(b"--b0und--\r\n")
        assert b"Content-ID: <1.2.1.1>" in whole

    asyncio.run(main())


def test_an_object_gone_mid_answer_cuts_the_body_short() -> None:
    store = _Objects({OUTPUTS[0].key: b"DICM first"})

    async def main() -> None:
        body = object_parts(_services(store), "j", OUTPUTS[:2], BOUNDARY)
        sent = [await anext(body) for _ in range(3)]
        with pytest.raises(ResultExpired):
            await anext(body)
        assert not b"".join(sent).endswith(b"--\r\n")

    asyncio.run(main())
