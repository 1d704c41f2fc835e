"""The embedded Redis that ``serve`` starts: only its owner can reach it or read its files."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from model_proxy.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "data")
    server.start()
    yield server
    server.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_client_without_the_password_is_refused(embedded: EmbeddedRedis) -> None:
    stranger = redis.Redis(host="127.0.0.1", port=_port(embedded.url), socket_timeout=2)
    with pytest.raises(redis.exceptions.AuthenticationError):
        stranger.set("job", "taken")
    stranger.close()
    owner = redis.Redis.from_url(embedded.url, socket_timeout=2)
    owner.set("job", "kept")
    assert owner.get("job") == b"kept"
    owner.close()


def test_every_file_it_writes_is_its_owners_only(embedded: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(embedded.url, socket_timeout=2)
    client.set("result", "x" * 1000)
    client.close()
    embedded.stop()  # flushes the append-only file
    paths = [embedded.data_dir, *embedded.data_dir.rglob("*")]
    assert any(p.name.endswith(".aof") for p in paths), [p.name for p in paths]
    loose = {
        str(p.relative_to(embedded.data_dir.parent)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in paths
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert loose == {}


def test_a_restart_keeps_the_data_and_tightens_old_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = EmbeddedRedis(data)
    client = redis.Redis.from_url(first.start(), socket_timeout=2)
    client.set("token", "kept")
    client.close()
    first.stop()
    (data / "redis.log").chmod(0o644)  # as an earlier version left it
    second = EmbeddedRedis(data)
    url = second.start()
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        assert client.get("token") == b"kept"
        client.close()
        assert stat.S_IMODE((data / "redis.log").stat().st_mode) == 0o600
    finally:
        second.stop()


def test_the_password_is_in_no_file_but_the_config(embedded: EmbeddedRedis) -> None:
    password = embedded.url.split("://:", 1)[1].split("@", 1)[0]
    assert len(password) >= 32
    embedded.stop()
    holders = [
        p.name
        for p in embedded.data_dir.rglob("*")
        if p.is_file() and password.encode() in p.read_bytes()
    ]
    assert holders == ["redis.conf"]
