"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """A fresh in-memory Redis (fakeredis, with Lua) for one test."""
    connection = fakeredis.FakeRedis()
    yield connection
    connection.close()
