"""Errors to HTTP answers: the status of every error class, and the worker-to-broker round trip."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import model_proxy.shared.errors as errors
from model_proxy.broker.errors import error_response, install_error_handlers, status_for
from model_proxy.shared.errors import ModelProxyError, error_from_code

EXPECTED_STATUS: dict[str, int] = {
    "ModelProxyError": 500,
    "ConfigError": 500,
    "InternalError": 500,
    "InvalidRequest": 400,
    "InvalidUid": 422,
    "InvalidDataFilter": 400,
    "BodyTooLarge": 413,
    "UnsupportedMediaType": 415,
    "BadIdempotencyKey": 400,
    "IdempotencyKeyReused": 422,
    "IdempotencyKeyInFlight": 409,
    "CallbackNotAllowed": 422,
    "TooManyCallbacks": 422,
    "NotFound": 404,
    "NoResultObject": 404,
    "UnknownModel": 404,
    "UnknownServer": 404,
    "LevelNotSupported": 404,
    "DicomNotFound": 404,
    "UpstreamError": 502,
    "PacsFailed": 502,
    "PacsAuthFailed": 502,
    "AuthTokenNeeded": 502,
    "PacsUnreachable": 502,
    "PacsInstanceTooLarge": 502,
    "PacsStoreFailed": 502,
    "InputTooLarge": 502,
    "ModelFailed": 502,
    "ModelUnreachable": 502,
    "BadModelResponse": 502,
    "ModelAnswerTooLarge": 502,
    "UnconvertibleAnswer": 502,
    "UpstreamTimeout": 504,
    "PacsTimeout": 504,
    "ModelTimeout": 504,
    "ServiceUnavailable": 503,
    "QueueUnavailable": 503,
    "ServiceBusy": 503,
    "AuditUnavailable": 503,
    "QueueFull": 429,
    "TooManyJobs": 429,
    "Unauthenticated": 401,
    "Forbidden": 403,
    "NotYourJob": 403,
    "AdminRequired": 403,
    "OriginNotAllowed": 403,
    "HostNotAllowed": 400,
    "UnknownJob": 404,
    "JobConflict": 409,
    "JobFinished": 409,
    "JobNotSucceeded": 409,
    "JobGone": 410,
    "JobCancelled": 410,
    "ResultExpired": 410,
    "InvalidCredentials": 401,
    "InsufficientScope": 403,
    "TooManyFailures": 429,
    "IdentityProviderUnavailable": 503,
}


def every_error_class() -> list[type[ModelProxyError]]:
    found: list[type[ModelProxyError]] = []
    pending: list[type[ModelProxyError]] = [ModelProxyError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


ERROR_CLASSES = every_error_class()


def test_the_table_covers_every_error_class() -> None:
    assert sorted(cls.__name__ for cls in ERROR_CLASSES) == sorted(EXPECTED_STATUS)


def test_every_error_class_is_exported() -> None:
    assert {cls.__name__ for cls in ERROR_CLASSES} <= set(errors.__all__)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_status_for(cls: type[ModelProxyError]) -> None:
    assert status_for(cls("x")) == EXPECTED_STATUS[cls.__name__]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_round_trip_through_the_job_record(cls: type[ModelProxyError]) -> None:
    """What a worker stores (code, message) gives the viewer the same status and body."""
    original = cls(f"{cls.__name__} happened on server b5208f48")
    rebuilt = error_from_code(original.code, original.message)
    assert isinstance(rebuilt, ModelProxyError)
    assert (rebuilt.code, rebuilt.message, str(rebuilt)) == (
        original.code,
        original.message,
        original.message,
    )
    assert status_for(rebuilt) == status_for(original)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_a_code_rebuilds_its_own_class_or_a_sibling_with_the_same_code(
    cls: type[ModelProxyError],
) -> None:
    rebuilt = error_from_code(cls.code, "m")
    assert type(rebuilt).code == cls.code


def test_an_unknown_code_becomes_an_internal_error() -> None:
    rebuilt = error_from_code("no_such_code", "the model exploded")
    assert isinstance(rebuilt, errors.InternalError)
    assert rebuilt.message == "the model exploded"
    assert status_for(rebuilt) == 500


def test_error_response_body() -> None:
    response = error_response(errors.UnknownModel("Not found: no model 'x' in models.json"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {
        "message": "Not found: no model 'x' in models.json",
        "code": "unknown_model",
    }


def test_error_response_extra_fields() -> None:
    response = error_response(errors.JobCancelled("job abc was cancelled"), jobId="abc")
    assert response.status_code == 410
    assert json.loads(response.body) == {
        "message": "job abc was cancelled",
        "code": "job_cancelled",
        "jobId": "abc",
    }


def test_a_busy_process_is_not_an_outage_and_says_when_to_retry() -> None:
    response = error_response(errors.ServiceBusy("at its load limit"))
    assert response.status_code == 503
    assert json.loads(response.body)["code"] == "busy"
    assert response.headers["retry-after"] == "1"
    assert "retry-after" not in error_response(errors.QueueUnavailable("down")).headers


def test_a_full_queue_says_when_to_retry() -> None:
    response = error_response(errors.QueueFull("model m has 2 jobs waiting", retry_after=7))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


# --- the handlers on a tiny app -----------------------------------------------------------------


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/ours")
    def ours() -> None:
        raise errors.PacsAuthFailed("server b5208f48 refused access (HTTP 401)")

    @app.get("/foreign")
    def foreign() -> None:
        raise RuntimeError("password=hunter2 leaked from a library")

    @app.get("/typed/{number}")
    def typed(number: int) -> int:
        return number

    return TestClient(app, raise_server_exceptions=False)


def test_our_error_becomes_its_status_and_body(client: TestClient) -> None:
    response = client.get("/ours")
    assert response.status_code == 502
    assert response.json() == {
        "message": "server b5208f48 refused access (HTTP 401)",
        "code": "pacs_auth_failed",
    }


def test_an_unknown_route_is_the_contracts_not_found(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"message": "Not found", "code": "not_found"}


def test_a_wrong_method(client: TestClient) -> None:
    response = client.post("/ours")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_a_validation_error_names_the_parameter(client: TestClient) -> None:
    response = client.get("/typed/seven")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["message"].startswith("path.number: ")


def test_a_foreign_exception_shows_nothing_of_itself(client: TestClient) -> None:
    response = client.get("/foreign")
    assert response.status_code == 500
    assert response.json() == {
        "message": "internal error; see the server log",
        "code": "internal_error",
    }
