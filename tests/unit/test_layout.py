"""The direction of dependencies: broker and workers both use shared, never each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "shared": {"broker", "workers", "model_proxy", "example_model"},
    "broker": {"workers", "model_proxy", "example_model"},
    "workers": {"broker", "model_proxy", "example_model"},
    "example_model": {"shared", "broker", "workers", "model_proxy"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_what_it_must_not(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_walk_finds_imports() -> None:
    """Guard against a vacuous pass: the walker sees broker's use of shared."""
    seen = set().union(*(imported_packages(p) for p in (ROOT / "broker").rglob("*.py")))
    assert "shared" in seen
