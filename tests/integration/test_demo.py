"""The demo PACS that ``make demo`` runs: it serves, stops cleanly and names a taken port.

Ctrl+C reaches the demo as SIGINT to its process group (as a terminal sends it); SIGTERM is what
the Makefile's trap sends. Either way Orthanc stops (it must not inherit a blocked SIGTERM) and
the temporary folder goes.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devtools.orthanc import ORTHANC_PLUGIN
from devtools.processes import free_port, require_binary, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo_pacs.py"
PASSWORD = "demo-Test-42"
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _start(port: int, tmp: Path) -> subprocess.Popen[str]:
    require_binary("/usr/sbin/Orthanc", "orthanc")
    require_binary(ORTHANC_PLUGIN, "orthanc-dicomweb")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp), "DEMO_PACS_PASSWORD": PASSWORD},
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _wait_for_line(demo: subprocess.Popen[str], starts: str, timeout: float = 120) -> str:
    """The first line of the demo's output that starts with ``starts``."""
    assert demo.stdout is not None
    stdout = demo.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert demo.poll() is None, demo.communicate()
            continue
        if line.startswith(starts):
            return line
    raise AssertionError(f"no line starting {starts!r} in {timeout} s")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _blocked_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigBlk line")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture()
def demo_tmp(tmp_path: Path) -> Iterator[Path]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    yield tmp


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_demo_pacs_serves_then_stops_orthanc_and_removes_its_folder(
    demo_tmp: Path, stop: signal.Signals
) -> None:
    port = free_port()
    demo = _start(port, demo_tmp)
    try:
        _wait_for_line(demo, "try: curl")
        studies = requests.get(
            f"http://127.0.0.1:{port}/dicom-web/studies", auth=("demo", PASSWORD), timeout=10
        )
        assert studies.status_code == 200
        assert "1.2.826.0.1.3680043.8.498.1001" in studies.text
        (orthanc,) = _children(demo.pid)
        assert _blocked_signals(orthanc) & SIGTERM_BIT == 0, "Orthanc would ignore SIGTERM"
        (folder,) = demo_tmp.iterdir()
        assert folder.name.startswith("model-proxy-demo-pacs-")

        started = time.monotonic()
        if stop == signal.SIGINT:
            os.killpg(demo.pid, signal.SIGINT)
        else:
            demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=30) == 0, demo.communicate()
        # well inside the 15 s after which a stop falls back to SIGKILL
        assert time.monotonic() - started < 10
        wait_until(lambda: _gone(orthanc), 5, "Orthanc to exit")
        assert list(demo_tmp.iterdir()) == []
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/system", timeout=2)
    finally:
        if demo.poll() is None:  # the test failed: leave no Orthanc behind
            for child in _children(demo.pid):
                os.killpg(child, signal.SIGKILL)
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()


def test_a_taken_port_is_named_and_nothing_is_started(demo_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = _start(port, demo_tmp)
        out, err = demo.communicate(timeout=60)
    assert demo.returncode == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"demo PACS: Orthanc: port {port} is already in use (stop whatever listens on it)"
    ]
    assert list(demo_tmp.iterdir()) == []
    assert _children(demo.pid) == []
