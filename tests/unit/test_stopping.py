"""workers/stopping.py: the grace period of a stopping worker, and the runs it cuts after it."""

from __future__ import annotations

import threading
import time

from model_proxy.workers.cutoff import Cutoff, CutReason
from model_proxy.workers.stopping import RunningJobs


def test_runs_that_end_within_the_grace_period_are_not_cut() -> None:
    runs = RunningJobs()
    cutoff = Cutoff(60.0)
    with runs.running("job-1", cutoff):
        waiter = runs.stop(5.0)
        assert runs.stopping
    assert waiter is not None
    waiter.join(timeout=1)

    assert not waiter.is_alive()  # it stopped waiting once no run was left
    assert cutoff.why() is None


def test_runs_that_outlast_the_grace_period_are_cut_to_be_handed_back() -> None:
    runs = RunningJobs()
    cutoff = Cutoff(60.0)
    with runs.running("job-1", cutoff):
        started = time.monotonic()
        runs.stop(0.2)
        assert cutoff.wait(5.0)
        waited = time.monotonic() - started

    assert 0.15 < waited < 2.0
    assert cutoff.why() is CutReason.HANDED_BACK
    assert len(runs) == 0


def test_a_run_that_starts_after_the_grace_period_is_cut_at_once_and_stop_is_once() -> None:
    runs = RunningJobs()
    first = runs.stop(0.0)
    assert first is not None
    first.join(timeout=1)
    assert runs.stop(10.0) is None

    cutoff = Cutoff(60.0)
    with runs.running("late-job", cutoff):
        assert cutoff.why() is CutReason.HANDED_BACK


def test_the_registry_is_safe_from_many_threads() -> None:
    runs = RunningJobs()

    def run(index: int) -> None:
        with runs.running(f"job-{index}", Cutoff(60.0)):
            time.sleep(0.01)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(runs) == 0
