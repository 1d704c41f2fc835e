"""The short form of the load test (``make load`` runs the long one): the whole stack under
concurrent clients of every kind, with no 5xx and no accepted job left unfinished."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.mixed_load import KINDS, run_mixed_load

pytestmark = pytest.mark.integration


def test_a_short_mixed_load_serves_everything_and_leaves_no_job_behind(tmp_path: Path) -> None:
    report = run_mixed_load(tmp_path, clients=40, seconds=12)
    print("\n" + report.render())
    assert report.served > 100
    assert {kind for kind, _ in report.statuses} == set(KINDS)
    assert report.server_errors == 0
    assert dict(report.unexpected) == {}
    assert dict(report.transport_errors) == {}
    assert report.accepted_jobs and report.not_terminal == []
