"""The API's short-lived in-memory copy of stored answers."""

from __future__ import annotations

import time

import pytest

from model_proxy.broker.result_cache import ResultCache
from model_proxy.shared.jobs import StoredAnswer, answer_json, pack_answer, read_answer


def _answer(body: bytes) -> StoredAnswer:
    return read_answer(pack_answer(body, level=0, min_bytes=0))


EMPTY = _answer(b"{}")


def test_an_answer_is_kept_for_its_seconds_then_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = ResultCache(seconds=2)
    cache.put("fp", "job-1", EMPTY)

    assert cache.get("fp") == ("job-1", EMPTY)
    now[0] += 2.5
    assert cache.get("fp") is None


def test_zero_seconds_turns_it_off() -> None:
    cache = ResultCache(seconds=0)
    cache.put("fp", "job-1", EMPTY)
    assert cache.get("fp") is None


def test_it_stays_within_its_count_and_bytes() -> None:
    cache = ResultCache(seconds=60, max_entries=2, max_bytes=800)
    for index in range(3):
        cache.put(f"fp{index}", f"job-{index}", _answer(b"x" * 50))
    assert cache.get("fp0") is None
    assert cache.get("fp2") == ("job-2", _answer(b"x" * 50))
    cache.put("big", "job-big", _answer(b"x" * 200))  # over an eighth of the bytes: not kept
    assert cache.get("big") is None


def test_the_least_recently_used_goes_first() -> None:
    cache = ResultCache(seconds=60, max_entries=2)
    cache.put("a", "job-a", _answer(b"1"))
    cache.put("b", "job-b", _answer(b"2"))
    cache.get("a")
    cache.put("c", "job-c", _answer(b"3"))
    assert cache.get("b") is None
    assert cache.get("a") == ("job-a", _answer(b"1"))


def test_it_holds_answers_compressed_and_counts_their_compressed_bytes() -> None:
    document = b"[" + b"0," * 50_000 + b"1]"  # 100 kB of JSON, a few hundred bytes gzipped
    stored = read_answer(pack_answer(document, level=1, min_bytes=1024))
    cache = ResultCache(seconds=60, max_bytes=16_000)  # keeps answers of up to 2 kB
    cache.put("fp", "job-1", stored)
    found = cache.get("fp")
    assert found is not None
    assert found[1].gzipped and len(found[1].body) < 2_000
    assert answer_json(pack_answer(document, 1, 1024)) == document
