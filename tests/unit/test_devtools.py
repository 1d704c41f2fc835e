"""The development parts' own behaviour that needs no server: ports, binaries, readiness."""

from __future__ import annotations

import socket
import sys
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


def test_wait_until_returns_once_the_check_holds() -> None:
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), 5, "counter")
