"""The description of each scripted step (``shared/jobs/operations.py``): keys under the store's
prefix, and replies read into the enums of ``shared/jobs/outcomes.py``."""

from __future__ import annotations

import re
from enum import StrEnum

import pytest

from model_proxy.shared.errors import DicomNotFound, JobCancelled
from model_proxy.shared.jobs import (
    Admission,
    Admitted,
    Claim,
    JobKeys,
    JobState,
    Lease,
    Requeued,
    Slot,
    Terminated,
    Written,
    scripts,
)
from model_proxy.shared.jobs.operations import JobOperations, ScriptCall, text
from tests.unit.jobs.support import LEASE, TTL, make_job

OPERATIONS = JobOperations(JobKeys("elsewhere"), TTL)


def every_call() -> list[tuple[str, ScriptCall[object]]]:
    job = make_job()
    return [
        ("create_or_attach", OPERATIONS.create_or_attach(job, use_cached=True)),
        ("cached_result", OPERATIONS.cached_result(job.fingerprint)),
        ("claim", OPERATIONS.claim(job, "worker-a", LEASE)),
        ("update", OPERATIONS.update(job.id, "worker-a", {"bytes_fetched": "1"}, True)),
        ("succeed", OPERATIONS.succeed(job, "worker-a")),
        ("fail", OPERATIONS.fail(job, "worker-a", DicomNotFound("x"))),
        ("terminate", OPERATIONS.terminate(job, JobState.CANCELLED, JobCancelled("x"))),
        ("renew_lease", OPERATIONS.renew_lease(job.id, "worker-a", LEASE)),
        ("release_lease", OPERATIONS.release_lease(job.id, "worker-a")),
        ("requeue_abandoned", OPERATIONS.requeue_abandoned(job, 3)),
        ("recover_queued", OPERATIONS.recover_queued(job.id, 0.0)),
        ("acquire_slot", OPERATIONS.acquire_slot(job.request.model_id, job.id, 2, 60)),
    ]


@pytest.mark.parametrize(("name", "call"), every_call(), ids=[name for name, _ in every_call()])
def test_every_key_is_under_the_stores_prefix(name: str, call: ScriptCall[object]) -> None:
    assert call.keys
    assert all(key.startswith("elsewhere:") for key in call.keys), name


def _returned(script: str) -> set[str]:
    """The quoted words a script can answer with (``return 'x'`` or ``refuse('x')``)."""
    return set(re.findall(r"(?:return|refuse\()\s*'(\w+)'", script))


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        (scripts.CLAIM, Claim),
        (scripts.UPDATE, Written),
        (scripts.FINISH, Written),
        (scripts.TERMINATE, Terminated),
        (scripts.RENEW_LEASE, Lease),
        (scripts.RELEASE_LEASE, Lease),
        (scripts.REQUEUE_IF_ABANDONED, Requeued),
        (scripts.RECOVER_QUEUED, Requeued),
        (scripts.ACQUIRE_SLOT, Slot),
        (scripts.CREATE_OR_ATTACH, Admission),
    ],
)
def test_every_answer_of_a_script_is_a_member_of_its_enum(
    script: str, outcome: type[StrEnum]
) -> None:
    answers = _returned(script) or set(re.findall(r"\{\{?\w+(?:\[\d\])?, '(\w+)'\}", script))
    assert answers
    assert answers <= {member.value for member in outcome}


def test_replies_read_as_bytes_or_text() -> None:
    job = make_job()
    call = OPERATIONS.create_or_attach(job, use_cached=False)
    assert call.reply([job.id.encode(), b"created"]) == Admitted(job.id, Admission.CREATED)
    assert call.reply([job.id, "attached"]) == Admitted(job.id, Admission.ATTACHED)
    assert not call.reply([job.id, "attached"]).created
    assert OPERATIONS.claim(job, "worker-a", LEASE).reply(b"busy") is Claim.BUSY
    assert OPERATIONS.cached_result(job.fingerprint).reply(None) is None
    assert OPERATIONS.cached_result(job.fingerprint).reply([b"id", b"{}"]) == ("id", b"{}")
    assert text(b"abc") == text("abc") == "abc"


def test_an_unknown_answer_is_an_error_not_a_silent_default() -> None:
    with pytest.raises(ValueError):
        OPERATIONS.renew_lease("job", "worker-a", LEASE).reply(b"1")
