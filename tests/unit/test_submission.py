"""The body of ``POST /jobs`` (``broker/submission.py``): only the fields of a request, the
level from the UIDs given, a fingerprint of what it says rather than how it is written, and
``Prefer: wait=N``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from model_proxy.broker.submission import JobSubmission, prefer_wait
from model_proxy.shared.config import Level, Task

STUDY = "1.2.3"
BODY: dict[str, Any] = {"task": "segmentations", "model": "m", "study": STUDY}


def _read(**changes: Any) -> JobSubmission:
    return JobSubmission.model_validate_json(json.dumps({**BODY, **changes}))


def test_the_level_follows_from_the_uids_given() -> None:
    assert _read().path.level is Level.STUDY
    assert _read(series="1.2.4").path.level is Level.SERIES
    assert _read(series="1.2.4", instance="1.2.5").path.level is Level.INSTANCE


@pytest.mark.parametrize(
    "changes",
    [
        {"colour": "blue"},
        {"data_filters": []},  # the field is named dataFilters, as in the job resource
        {"callback": ""},
        {"callback": "https://example.org/" + "a" * 2048},
        {"instance": "1.2.5"},  # an instance needs its series
        {"task": "classifications"},
        {"model": ""},
        {"model": "m" * 129},
        {"study": "1" * 129},
        {"fresh": "true"},  # JSON types as they are: no coercion
        {"study": 123},
        {"dataFilters": {"dataKey": "a"}},
    ],
)
def test_anything_but_a_request_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _read(**changes)


def test_a_missing_study_is_refused() -> None:
    with pytest.raises(ValidationError):
        JobSubmission.model_validate_json(json.dumps({"task": "annotations", "model": "m"}))


def test_task_is_the_route_or_the_job_resources_name() -> None:
    assert _read(task="predictions").inference_task is Task.PREDICTION
    assert _read(task="prediction").inference_task is Task.PREDICTION


def test_the_fingerprint_is_of_what_the_body_says() -> None:
    same = [
        _read(),
        _read(task="segmentation"),
        _read(fresh=False),
        JobSubmission.model_validate_json(
            '{ "study": "1.2.3", "model": "m", "task": "segmentations" }'
        ),
    ]
    assert len({body.fingerprint() for body in same}) == 1
    different = [_read(fresh=True), _read(server="pacs"), _read(series="1.2.4"), _read(model="n")]
    assert len({body.fingerprint() for body in [same[0], *different]}) == 5


@pytest.mark.parametrize(
    ("prefer", "wait"),
    [
        (None, None),
        ("respond-async", None),
        ("wait=10", 10),
        ("respond-async, wait=5", 5),
        ("wait=7; foo=bar", 7),
        ('WAIT="3"', 3),
        ("wait=600", 60),  # at most the limit
        ("wait=0", 0),
        ("wait=-1", None),  # not understood: ignored
        ("wait=soon", None),
        ("wait=" + "9" * 5000, None),
    ],
)
def test_prefer_wait(prefer: str | None, wait: int | None) -> None:
    assert prefer_wait(prefer, 60) == wait
