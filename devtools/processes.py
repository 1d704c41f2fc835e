"""Starting and stopping the real servers that the tests, the benchmark and the demo talk to."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import requests

from devtools.errors import MissingBinaryError, NotReadyError, PortInUseError

__all__ = [
    "ManagedProcess",
    "ensure_port_free",
    "free_port",
    "require_binary",
    "start_on_free_port",
    "start_service",
    "wait_until",
    "wait_until_worker_ready",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int, what: str) -> None:
    """Raise :class:`PortInUseError` when something already listens on loopback ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as servers do: connections of an earlier run in TIME_WAIT do not make the port taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(port, what) from None
            raise


def require_binary(path: str, package: str) -> str:
    """The binary's path, or :class:`MissingBinaryError` naming the package that provides it.

    The tests turn that error into a skip (a failure under CI): see ``tests/conftest.py``.
    """
    found = path if Path(path).is_file() else shutil.which(path)
    if found:
        return found
    raise MissingBinaryError(path, package)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll ``check`` until it is true; :class:`NotReadyError` if ``alive`` turns false first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise NotReadyError(f"{what}: the process exited while starting")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise NotReadyError(f"{what}: not ready after {timeout} s")


class ManagedProcess:
    """A child process with its output in a log file, stopped with SIGTERM (then SIGKILL)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log_start = log_path.stat().st_size  # what earlier runs under this name wrote
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        """The whole log file, earlier runs under the same log path included."""
        return self.log_path.read_text(errors="replace")

    def output(self) -> str:
        """What this run wrote to the log (the file is appended to by each start)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the process group for the ``with`` block, SIGCONT it after: a test's moment
        in which the process (a worker and its pool) changes nothing."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole process group: no chance to clean up."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; then close the log."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """:func:`wait_until` ``check``; stop the process when it does not get ready."""
        try:
            wait_until(check, timeout, what, alive=lambda: self.alive)
        except BaseException:
            self.stop()
            raise


def start_service(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    ready_url: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
    verify: bool | str = True,
) -> ManagedProcess:
    """Start a server process and return once ``ready_url`` answers 2xx."""
    process = ManagedProcess(name, argv, log_path, env=env, cwd=cwd)
    process.wait_ready(lambda: requests.get(ready_url, timeout=1, verify=verify).ok, timeout, name)
    return process


def start_on_free_port(
    name: str,
    argv: Callable[[int], Sequence[str]],
    log_path: Path,
    ready_path: str,
    *,
    timeout: float = 60.0,
) -> tuple[str, ManagedProcess]:
    """Start ``argv(port)`` on a free loopback port; its base URL once ``ready_path`` answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return url, start_service(name, argv(port), log_path, f"{url}{ready_path}", timeout=timeout)


def wait_until_worker_ready(worker: ManagedProcess, timeout: float = 60.0) -> None:
    """A Celery worker logs `` ready.`` once it consumes its queues (in this run's output: an
    earlier run under the same log path said so too)."""
    wait_until(
        lambda: " ready." in worker.output(), timeout, worker.name, alive=lambda: worker.alive
    )
