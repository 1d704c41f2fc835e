"""Starting and stopping the real servers the tests talk to."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import requests

__all__ = [
    "ManagedProcess",
    "free_port",
    "require_binary",
    "start_service",
    "wait_until",
    "wait_until_worker_ready",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(path: str, package: str) -> str:
    """The binary's path; without it the test fails under CI and is skipped elsewhere."""
    found = path if Path(path).is_file() else shutil.which(path)
    if found:
        return found
    message = f"{path} is missing: apt-get install {package}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] = lambda: True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what}: the process exited while starting")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout} s")


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
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: no chance to clean up."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


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
    wait_until(
        lambda: requests.get(ready_url, timeout=1, verify=verify).ok,
        timeout,
        name,
        alive=lambda: process.alive,
    )
    return process


def wait_until_worker_ready(worker: ManagedProcess, timeout: float = 60.0) -> None:
    """A Celery worker logs `` ready.`` once it consumes its queues."""
    wait_until(
        lambda: " ready." in worker.log_text(), timeout, worker.name, alive=lambda: worker.alive
    )
