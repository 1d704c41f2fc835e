"""The direction of dependencies, and the names an install adds.

Inside the ``model_proxy`` namespace, ``broker`` and ``workers`` both use ``shared`` and never
each other; ``shared`` uses neither; the example model stands alone; the command line reaches the
API and the workers only through their app factories. Nothing outside ``tests/`` imports ``tests``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The parts of the namespace, each a folder at the top of the repository.
PARTS = ("shared", "broker", "workers", "example_model")
CLI = "cli"  # the modules of model_proxy/ itself
FORBIDDEN = {
    "shared": {"broker", "workers", CLI, "example_model"},
    "broker": {"workers", CLI, "example_model"},
    "workers": {"broker", CLI, "example_model"},
    "example_model": {"shared", "broker", "workers", CLI},
}
# What the command line may take from the API and the workers: their app factories.
CLI_MAY_IMPORT = {"model_proxy.broker.app", "model_proxy.workers.app"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def part_of(module: str) -> str | None:
    """Which part of the project a module name belongs to (None: not ours)."""
    head, _, rest = module.partition(".")
    if head == "tests":
        return "tests"
    if head != "model_proxy":
        return None
    sub = rest.split(".")[0]
    return sub if sub in PARTS else CLI


def cli_files() -> list[Path]:
    return sorted(p for p in (ROOT / "model_proxy").glob("*.py"))


def test_parts_are_linked_into_the_namespace() -> None:
    for part in PARTS:
        link = ROOT / "model_proxy" / part
        assert link.is_symlink() and link.resolve() == (ROOT / part).resolve(), part


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_part_does_not_import_what_it_must_not(part: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            {part_of(m) for m in imported_modules(path)} & FORBIDDEN[part]
        )
        for path in sorted((ROOT / part).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_old_top_level_names_are_never_imported() -> None:
    """Everything imports the parts through the namespace that the install adds."""
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in {".venv", "build", "model_proxy"} or "site-packages" in rel.parts:
            continue
        bare = {m for m in imported_modules(path) if m.split(".")[0] in PARTS}
        if bare:
            offenders[str(rel)] = sorted(bare)
    assert offenders == {}


def _source_files_outside_tests() -> list[Path]:
    skipped = {".venv", "build", "tests", "model_proxy"}  # model_proxy/: links, seen as parts
    return [
        path
        for path in sorted(ROOT.rglob("*.py"))
        if path.relative_to(ROOT).parts[0] not in skipped
        and "site-packages" not in path.relative_to(ROOT).parts
    ] + cli_files()


def test_nothing_outside_tests_imports_tests() -> None:
    """The benchmark, the demo and devtools/ stand on their own; tests use them, not the reverse."""
    files = _source_files_outside_tests()
    assert {"devtools", "bench", "scripts"} <= {p.relative_to(ROOT).parts[0] for p in files}
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m for m in imported_modules(path) if part_of(m) == "tests"
        )
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_devtools_does_not_import_pytest() -> None:
    """The benchmark and the demo run without pytest installed."""
    offenders = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "devtools").rglob("*.py")
        if any(m.split(".")[0] == "pytest" for m in imported_modules(path))
    }
    assert offenders == set()


def test_no_test_module_imports_a_conftest() -> None:
    """Fixtures come from conftest by name; anything a test imports lives in tests/support."""
    offenders = {
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if any(m.split(".")[-1] == "conftest" for m in imported_modules(path))
    }
    assert offenders == set()


def test_the_walk_finds_imports() -> None:
    """Guard against a vacuous pass: the walker sees broker's use of shared."""
    seen = set().union(*(imported_modules(p) for p in (ROOT / "broker").rglob("*.py")))
    assert "shared" in {part_of(m) for m in seen}


def test_the_cli_reaches_the_api_and_workers_only_through_their_app_factories() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            m
            for m in imported_modules(path)
            if part_of(m) in {"broker", "workers"} and m not in CLI_MAY_IMPORT
        )
        for path in cli_files()
    }
    assert {k: v for k, v in offenders.items() if v} == {}
