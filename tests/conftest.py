"""A system program the tests need and do not find: skipped here, a failure under CI."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from devtools.errors import MissingBinaryError


def pytest_configure(config: pytest.Config) -> None:
    """starlette's TestClient sends ``Host: testserver``, a name the API does not answer by
    default: the tests' settings list it (a test of the host check sets its own list)."""
    os.environ.setdefault("MODEL_PROXY_ALLOWED_HOSTS", "localhost,testserver")


def _missing(exc: MissingBinaryError) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(str(exc), pytrace=False)
    pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    """Wraps the setup (fixtures that start servers) and the call of each test alike."""
    try:
        return (yield)
    except MissingBinaryError as exc:
        _missing(exc)


pytest_runtest_call = pytest_runtest_setup
