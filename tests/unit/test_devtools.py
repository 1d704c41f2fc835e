"""The development parts' own behaviour that needs no server: ports, binaries, readiness."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import ports
from devtools.errors import DevtoolsError, MissingBinaryError, NotReadyError, PortInUseError
from devtools.processes import (
    ManagedProcess,
    ensure_port_free,
    free_port,
    require_binary,
    wait_until,
    wait_until_worker_ready,
)


@pytest.fixture()
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_free_port_passes() -> None:
    ensure_port_free(free_port(), "Orthanc")


def test_a_taken_port_is_named(taken_port: int) -> None:
    with pytest.raises(PortInUseError) as caught:
        ensure_port_free(taken_port, "Orthanc")
    assert caught.value.port == taken_port
    assert str(caught.value) == (
        f"Orthanc: port {taken_port} is already in use (stop whatever listens on it)"
    )
    assert isinstance(caught.value, DevtoolsError)


def test_the_ports_command_names_each_taken_port(
    taken_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ports.main([str(free_port()), str(taken_port)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"demo: port {taken_port} is already in use (stop whatever listens on it)"
    ]
    assert ports.main([str(free_port())]) == 0


def test_a_missing_binary_names_its_package() -> None:
    """The tests turn this into a skip, or a failure under CI (tests/conftest.py)."""
    with pytest.raises(MissingBinaryError, match="apt-get install no-such-package"):
        require_binary("/no/such/binary", "no-such-package")
    assert require_binary(sys.executable, "python3") == sys.executable


def test_a_process_that_exits_while_starting_is_not_ready(tmp_path: Path) -> None:
    process = ManagedProcess("quitter", [sys.executable, "-c", "pass"], tmp_path / "quit.log")
    with pytest.raises(NotReadyError, match="quitter: the process exited while starting"):
        process.wait_ready(lambda: False, 10, "quitter")
    assert not process.alive


def test_a_process_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    process = ManagedProcess("sleeper", sleeper, tmp_path / "sleep.log")
    with pytest.raises(NotReadyError, match=r"not ready after 0\.3 s"):
        process.wait_ready(lambda: False, 0.3, "sleeper")
    assert not process.alive


def test_a_second_start_under_the_same_log_waits_for_its_own_ready_line(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    earlier = ManagedProcess("worker", [sys.executable, "-c", "print(' ready.')"], log)
    earlier.process.wait()
    earlier.stop()
    silent = ManagedProcess("worker", [sys.executable, "-c", "import time; time.sleep(60)"], log)
    try:
        with pytest.raises(NotReadyError, match=r"not ready after 0\.3 s"):
            wait_until_worker_ready(silent, timeout=0.3)
        assert " ready." in silent.log_text() and silent.output() == ""
    finally:
        silent.stop()


def test_a_paused_process_writes_nothing_until_it_is_resumed(tmp_path: Path) -> None:
    ticker = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.01)"
    process = ManagedProcess("ticker", [sys.executable, "-c", ticker], tmp_path / "tick.log")
    try:
        wait_until(lambda: "tick" in process.output(), 10, "ticker")
        with process.paused():
            time.sleep(0.05)  # a tick written just before the stop reaches the file
            frozen = process.output()
            time.sleep(0.2)
            assert process.output() == frozen
        wait_until(lambda: process.output() != frozen, 10, "ticker resumed")
    finally:
        process.stop()


def test_wait_until_returns_once_the_check_holds() -> None:
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), 5, "counter")
