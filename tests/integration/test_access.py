"""``serve`` beyond loopback needs a decision on anonymous access, and says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.processes import free_port
from tests.unit.test_origins import MODELS, SERVERS

pytestmark = pytest.mark.integration


def _serve(tmp_path: Path, *extra: str, **environ: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "servers.json").write_text(SERVERS)
    (tmp_path / "models.json").write_text(MODELS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_PROXY_")}
    env |= {
        "MODEL_PROXY_SERVERS_FILE": str(tmp_path / "servers.json"),
        "MODEL_PROXY_MODELS_FILE": str(tmp_path / "models.json"),
        "MODEL_PROXY_DATA_DIR": str(tmp_path / "data"),
        **environ,
    }
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(free_port()), *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_serve_beyond_loopback_without_a_decision_refuses_to_start(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "0.0.0.0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "MODEL_PROXY_ANONYMOUS=viewer" in lines[0] and "=none" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing was started


def test_an_invalid_decision_is_refused_with_its_name(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "0.0.0.0", MODEL_PROXY_ANONYMOUS="everyone")
    assert done.returncode == 2
    assert "anonymous" in done.stderr.lower() and "Traceback" not in done.stderr
