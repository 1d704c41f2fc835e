"""The installed package owns only its own names.

The wheel is built from this checkout and installed into a fresh virtual environment; the
top-level names it adds to site-packages must be the project's own, and its parts must import
under the ``model_proxy`` namespace.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "test-artifacts"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so the build leaves nothing behind in the checkout.
    source = tmp_path_factory.mktemp("source") / "model-proxy"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(source)],
        check=True,
        timeout=300,
    )
    (found,) = out.glob("model_proxy-*.whl")
    return found


def test_the_wheel_adds_no_top_level_name_but_its_own(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    before = {p.name for p in site.iterdir()}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    added = {p.name for p in site.iterdir()} - before
    packages = {name for name in added if not name.endswith((".dist-info", ".pth"))}
    assert packages == {"model_proxy"}
    installed = site / "model_proxy"
    for part in ("shared", "broker", "workers", "example_model"):
        assert (installed / part / "__init__.py").is_file(), part
        assert not (installed / part).is_symlink(), part
    # The parts are importable by their namespaced names, with no checkout on the path.
    probe = subprocess.run(
        [str(python), "-I", "-c", "import model_proxy.shared.uids as m; print(m.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.stdout.strip().startswith(str(installed))
