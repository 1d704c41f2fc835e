"""The benchmark suite still runs: ``python -m bench --smoke`` completes and prints every row.

Its numbers are never asserted (shared machines are too noisy for that); only that each row was
measured, so that the suite cannot rot while nobody runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rows import ROW_NAMES
from bench.transport import TRANSPORT
from devtools.orthanc import ORTHANC_PLUGIN
from devtools.processes import require_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_smoke_benchmark_prints_every_row() -> None:
    require_binary("/usr/sbin/Orthanc", "orthanc")
    require_binary(ORTHANC_PLUGIN, "orthanc-dicomweb")
    require_binary("/usr/bin/redis-server", "redis-server")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for name in (*ROW_NAMES, TRANSPORT):
        assert any(line.startswith(f"| {name} ") for line in table), (name, done.stdout)
