"""A job record and its Redis hash (``shared/jobs/model.py``)."""

from __future__ import annotations

import pytest

from model_proxy.shared.config.schema import Level
from model_proxy.shared.jobs import (
    JOB_STATES,
    Job,
    JobError,
    JobOutput,
    JobState,
    job_from_fields,
    job_to_fields,
    new_job,
)
from tests.unit.jobs.support import (
    MODEL,
    REQUEST,
    make_job,
)


def test_a_new_job_is_queued_with_a_fresh_id() -> None:
    first, second = make_job(), make_job()
    assert first.state is JobState.QUEUED
    assert first.id != second.id
    assert len(first.id) == 32 and int(first.id, 16) >= 0
    assert first.created_at == first.updated_at
    assert (first.queue, first.attempts, first.error) == ("gpu", 0, None)
    assert first.fingerprint == second.fingerprint == REQUEST.fingerprint()


def full_job() -> Job:
    """A job with every field set, the floats at full precision."""
    request = REQUEST.model_copy(update={"level": Level.INSTANCE, "series_uid": "1.2.3.4"})
    return new_job(request, queue="gpu").model_copy(
        update={
            "state": JobState.FAILED,
            "created_at": 1764300000.123456789,
            "updated_at": 1764300042.1,
            "started_at": 1764300001.000001,
            "inferring_at": 1764300002.5,
            "finished_at": 1764300042.1,
            "error": JobError(code="dicom_not_found", message='the "series" was not found'),
            "instances_fetched": 300,
            "instances_total": 301,
            "bytes_fetched": 157_286_400,
            "attempts": 2,
            "outputs": (
                JobOutput(
                    format="seg",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    series_instance_uid="1.2.3.5",
                    sop_instance_uid="1.2.3.6",
                    server="pacs-1",
                    stored=True,
                ),
                JobOutput(format="sr", server="pacs-1"),
            ),
            "output_error": JobError(code="model_answer_unconvertible", message="no ROI"),
            "store_error": JobError(code="pacs_store_failed", message="1.2.3.7 refused"),
        }
    )


@pytest.mark.parametrize("job", [make_job(), full_job()], ids=["new", "full"])
def test_round_trip(job: Job) -> None:
    fields = job_to_fields(job)
    assert all(isinstance(value, str) for value in fields.values())
    assert job_from_fields(fields) == job


@pytest.mark.parametrize("job", [make_job(), full_job()], ids=["new", "full"])
def test_round_trip_through_bytes_as_redis_returns_them(job: Job) -> None:
    as_bytes = {k.encode(): v.encode() for k, v in job_to_fields(job).items()}
    assert job_from_fields(as_bytes) == job


def test_absent_values_are_left_out_of_the_hash() -> None:
    fields = job_to_fields(make_job())
    assert not {"started_at", "inferring_at", "finished_at", "instances_total", "error"} & set(
        fields
    )
    assert fields["model"] == MODEL


def test_a_record_without_progress_fields_reads_as_zero() -> None:
    fields = job_to_fields(make_job())
    del fields["instances_fetched"], fields["bytes_fetched"], fields["attempts"]
    job = job_from_fields(fields)
    assert job is not None
    assert (job.instances_fetched, job.bytes_fetched, job.attempts) == (0, 0, 0)


def _without(*names: str) -> dict[str, str]:
    fields = job_to_fields(make_job())
    for name in names:
        del fields[name]
    return fields


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"state": "fetching", "updated_at": "1764300042.1", "bytes_fetched": "300"},
        _without("id"),
        _without("request"),
        _without("state"),
        _without("created_at"),
    ],
    ids=["empty", "a-stray-write", "no-id", "no-request", "no-state", "no-created_at"],
)
def test_an_incomplete_hash_is_no_job(fields: dict[str, str]) -> None:
    assert job_from_fields(fields) is None


@pytest.mark.parametrize(
    ("state", "finished"),
    [
        (JobState.QUEUED, False),
        (JobState.FETCHING, False),
        (JobState.INFERRING, False),
        (JobState.SUCCEEDED, True),
        (JobState.FAILED, True),
        (JobState.CANCELLED, True),
    ],
)
def test_finished_states(state: JobState, finished: bool) -> None:
    assert state.finished is finished


def test_the_one_list_of_states_follows_a_jobs_life() -> None:
    assert JOB_STATES == ("queued", "fetching", "inferring", "succeeded", "failed", "cancelled")
    assert tuple(state.value for state in JobState) == JOB_STATES


def test_the_formats_of_an_older_record_read_as_outputs_not_stored() -> None:
    fields = job_to_fields(make_job()) | {"outputs": "seg,sr"}
    job = job_from_fields(fields)
    assert job is not None
    assert job.outputs == (JobOutput(format="seg"), JobOutput(format="sr"))
    assert job.output_formats == ("seg", "sr")
