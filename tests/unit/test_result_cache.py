"""The API's short-lived in-memory copy of stored answers."""

from __future__ import annotations

import time

import pytest

from model_proxy.broker.result_cache import ResultCache


def test_an_answer_is_kept_for_its_seconds_then_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    cache = ResultCache(seconds=2)
    cache.put("fp", "job-1", b"{}")

    assert cache.get("fp") == ("job-1", b"{}")
    now[0] += 2.5
    assert cache.get("fp") is None


def test_zero_seconds_turns_it_off() -> None:
    cache = ResultCache(seconds=0)
    cache.put("fp", "job-1", b"{}")
    assert cache.get("fp") is None


def test_it_stays_within_its_count_and_bytes() -> None:
    cache = ResultCache(seconds=60, max_entries=2, max_bytes=800)
    for index in range(3):
        cache.put(f"fp{index}", f"job-{index}", b"x" * 50)
    assert cache.get("fp0") is None
    assert cache.get("fp2") == ("job-2", b"x" * 50)
    cache.put("big", "job-big", b"x" * 200)  # larger than an eighth of the bytes: not kept
    assert cache.get("big") is None


def test_the_least_recently_used_goes_first() -> None:
    cache = ResultCache(seconds=60, max_entries=2)
    cache.put("a", "job-a", b"1")
    cache.put("b", "job-b", b"2")
    cache.get("a")
    cache.put("c", "job-c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == ("job-a", b"1")
