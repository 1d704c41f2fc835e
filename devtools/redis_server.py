"""A real redis-server on a free loopback port, data in its own directory."""

from __future__ import annotations

from pathlib import Path

import redis

from devtools.processes import ManagedProcess, free_port, require_binary

__all__ = ["RedisServer"]


class RedisServer:
    """redis-server on a free loopback port, without snapshots; append-only when asked."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self._binary = require_binary("/usr/bin/redis-server", "redis-server")
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._start()

    def _start(self) -> None:
        binary, workdir, appendonly = self._binary, self.workdir, self.appendonly
        argv = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
        ]
        self.process = ManagedProcess("redis", argv, workdir / "redis.log")
        client = redis.Redis.from_url(self.url)
        try:
            self.process.wait_ready(lambda: bool(client.ping()), 15, "redis-server")
        finally:
            client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        """Stop (Redis writes its append-only file) and start again on the same port and data."""
        self.stop()
        self._start()
