"""The hashed lock files that CI and the image install from agree with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


def pins(lock: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("dev.lock", ("test", "example-model")), ("runtime.lock", ("example-model",))],
)
def test_every_declared_dependency_is_pinned_within_its_range(
    lock: str, extras: tuple[str, ...]
) -> None:
    pinned = pins(ROOT / "requirements" / lock)
    wrong = {
        str(req): pinned.get(canonicalize_name(req.name))
        for req in declared(*extras)
        if req.marker is None or req.marker.evaluate()
        if not req.specifier.contains(
            pinned.get(canonicalize_name(req.name), "0"), prereleases=True
        )
    }
    assert wrong == {}


@pytest.mark.parametrize("lock", ["dev.lock", "runtime.lock"])
def test_every_pin_carries_a_hash(lock: str) -> None:
    text = (ROOT / "requirements" / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert pins(ROOT / "requirements" / lock) and unhashed == []


def test_known_vulnerable_releases_are_excluded() -> None:
    """The floors keep out releases with published vulnerabilities (see pyproject.toml)."""
    floors = {canonicalize_name(r.name): r.specifier for r in declared()}
    for name, bad in [
        ("requests", "2.32.3"),
        ("h11", "0.14.0"),
        ("starlette", "0.40.0"),
        ("urllib3", "2.2.2"),
        ("pyjwt", "2.10.0"),
    ]:
        assert not floors[name].contains(bad), name
