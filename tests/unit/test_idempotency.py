"""The idempotency keys of ``POST /jobs`` (``broker/idempotency.py``) on fakeredis: a key names
one job per caller for its time to live, a key used with another body is refused, concurrent
first uses make one claim, and a released claim lets a retry make the job."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import fakeredis
import pytest

from model_proxy.broker.idempotency import (
    CLAIM_SECONDS,
    IdempotencyKey,
    IdempotencyKeys,
)
from model_proxy.shared.errors import (
    BadIdempotencyKey,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
)

_T = TypeVar("_T")
TTL = 86400


def _run(test: Callable[[IdempotencyKeys, fakeredis.FakeAsyncRedis], Awaitable[_T]]) -> _T:
    async def main() -> _T:
        client = fakeredis.FakeAsyncRedis()
        try:
            return await test(IdempotencyKeys(client, "mp", TTL, 0.3), client)
        finally:
            await client.aclose()

    return asyncio.run(main())


KEY = IdempotencyKey.checked("order-42", "body-a")


def test_the_first_use_claims_the_key_and_a_retry_gets_its_job() -> None:
    async def test(keys: IdempotencyKeys, client: fakeredis.FakeAsyncRedis) -> None:
        claim = await keys.claim("ward-a", KEY)
        assert claim.job_id is None
        assert 0 < await client.ttl(claim.redis_key) <= CLAIM_SECONDS

        await keys.record(claim, "job-1")

        again = await keys.claim("ward-a", KEY)
        assert again.job_id == "job-1"
        assert CLAIM_SECONDS < await client.ttl(claim.redis_key) <= TTL

    _run(test)


def test_a_key_with_another_body_is_refused() -> None:
    async def test(keys: IdempotencyKeys, _: fakeredis.FakeAsyncRedis) -> None:
        await keys.record(await keys.claim("ward-a", KEY), "job-1")

        with pytest.raises(IdempotencyKeyReused):
            await keys.claim("ward-a", IdempotencyKey("order-42", "body-b"))

    _run(test)


def test_keys_belong_to_their_caller() -> None:
    async def test(keys: IdempotencyKeys, _: fakeredis.FakeAsyncRedis) -> None:
        await keys.record(await keys.claim("ward-a", KEY), "job-1")

        other = await keys.claim("ward-b", IdempotencyKey("order-42", "body-b"))

        assert other.job_id is None  # claimed afresh: ward-b's key, not ward-a's
        assert keys.redis_key("ward-a", "x:y") != keys.redis_key("ward-a:x", "y")

    _run(test)


def test_neither_caller_nor_key_is_written_as_sent() -> None:
    async def test(keys: IdempotencyKeys, client: fakeredis.FakeAsyncRedis) -> None:
        await keys.record(await keys.claim("ward-a", KEY), "job-1")

        stored = [key.decode() for key in await client.keys("*")]
        assert len(stored) == 1
        assert "ward-a" not in stored[0] and "order-42" not in stored[0]

    _run(test)


def test_concurrent_first_uses_make_one_claim_and_the_other_gets_its_job() -> None:
    async def test(keys: IdempotencyKeys, _: fakeredis.FakeAsyncRedis) -> list[str | None]:
        first = await keys.claim("ward-a", KEY)
        waiting = asyncio.create_task(keys.claim("ward-a", KEY))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # the key is claimed: the second use waits for its job
        await keys.record(first, "job-1")
        return [first.job_id, (await waiting).job_id]

    assert _run(test) == [None, "job-1"]


def test_a_claim_that_names_no_job_in_time_is_in_flight() -> None:
    async def test(keys: IdempotencyKeys, _: fakeredis.FakeAsyncRedis) -> None:
        await keys.claim("ward-a", KEY)
        with pytest.raises(IdempotencyKeyInFlight):
            await keys.claim("ward-a", KEY)

    _run(test)


def test_a_released_claim_lets_a_retry_make_the_job_but_a_recorded_one_stays() -> None:
    async def test(keys: IdempotencyKeys, _: fakeredis.FakeAsyncRedis) -> None:
        await keys.release(await keys.claim("ward-a", KEY))
        retry = await keys.claim("ward-a", KEY)
        assert retry.job_id is None

        await keys.record(retry, "job-1")
        await keys.release(retry)
        assert (await keys.claim("ward-a", KEY)).job_id == "job-1"

    _run(test)


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\tkey", "line\nkey"])
def test_a_key_must_be_1_to_255_printable_ascii_characters(key: str) -> None:
    with pytest.raises(BadIdempotencyKey):
        IdempotencyKey.checked(key, "body-a")


def test_a_quoted_key_is_taken_without_its_quotes() -> None:
    assert IdempotencyKey.checked('"abc"', "f").key == "abc"
    assert IdempotencyKey.checked("x" * 255, "f").key == "x" * 255
