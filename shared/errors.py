"""The one error tree of model-proxy.

Every error that can reach a user carries a stable ``code`` and a ``message`` that is safe to
show: it names servers and models by their key, never their credentials, tokens or patient data.
Clients translate foreign exceptions (requests, redis, pydicom) into these at the boundary.
The broker maps each class to an HTTP status; workers store ``code`` and ``message`` in the job
record, and :func:`error_from_code` rebuilds the error on the other side.

An error is *transient* when the same call may well succeed a moment later: a peer that refused
the connection or reset it, a gateway that answered 502/503/504, Redis away for a moment. The
worker's retry policy asks :func:`is_transient`, never the message. A peer that did not answer in
time is not transient: the wait already took what a retry would need, and a model that timed out
may still be working on the first call.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "TRANSIENT_HTTP_STATUSES",
    "AdminRequired",
    "AuditUnavailable",
    "AuthTokenNeeded",
    "BadIdempotencyKey",
    "BadModelResponse",
    "BodyTooLarge",
    "CallbackNotAllowed",
    "ConfigError",
    "DicomNotFound",
    "Forbidden",
    "HostNotAllowed",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "IdentityProviderUnavailable",
    "InputTooLarge",
    "InsufficientScope",
    "InternalError",
    "InvalidCredentials",
    "InvalidDataFilter",
    "InvalidRequest",
    "InvalidUid",
    "JobCancelled",
    "JobConflict",
    "JobFinished",
    "JobGone",
    "JobNotSucceeded",
    "LevelNotSupported",
    "ModelAnswerTooLarge",
    "ModelFailed",
    "ModelProxyError",
    "ModelTimeout",
    "ModelUnreachable",
    "NoResultObject",
    "NotFound",
    "NotYourJob",
    "OriginNotAllowed",
    "PacsAuthFailed",
    "PacsFailed",
    "PacsInstanceTooLarge",
    "PacsStoreFailed",
    "PacsTimeout",
    "PacsUnreachable",
    "QueueFull",
    "QueueUnavailable",
    "ResultExpired",
    "ServiceBusy",
    "ServiceUnavailable",
    "TooManyCallbacks",
    "TooManyFailures",
    "TooManyJobs",
    "Unauthenticated",
    "UnconvertibleAnswer",
    "UnknownJob",
    "UnknownModel",
    "UnknownServer",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
    "error_from_code",
    "is_transient",
]

TRANSIENT_HTTP_STATUSES = frozenset({502, 503, 504})
"""Statuses of a gateway or server that is overloaded or restarting: worth another try."""


class ModelProxyError(Exception):
    """Base of every error model-proxy raises on purpose."""

    code: ClassVar[str] = "internal_error"
    transient: bool = False  # True: the same call may succeed a moment later
    retry_after: int | None = None  # seconds a client should wait before asking again

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ModelProxyError):
    """A configuration file or setting is invalid; raised at start-up."""

    code = "invalid_config"


class InternalError(ModelProxyError):
    """Something unexpected failed; details are in the log, not in the message."""

    code = "internal_error"


# --- the request itself is wrong -------------------------------------------------------------


class InvalidRequest(ModelProxyError):
    code = "invalid_request"


class InvalidUid(InvalidRequest):
    code = "invalid_uid"


class InvalidDataFilter(InvalidRequest):
    code = "invalid_data_filter"


class BodyTooLarge(InvalidRequest):
    """A request body larger than the route takes (``POST /jobs``:
    ``MODEL_PROXY_SUBMIT_MAX_BODY_BYTES``)."""

    code = "body_too_large"


class UnsupportedMediaType(InvalidRequest):
    """A request body that is not of the media type the route takes (JSON)."""

    code = "unsupported_media_type"


class BadIdempotencyKey(InvalidRequest):
    """An ``Idempotency-Key`` header that is not 1 to 255 printable ASCII characters."""

    code = "bad_idempotency_key"


class IdempotencyKeyReused(InvalidRequest):
    """An ``Idempotency-Key`` the caller already used for a different request body."""

    code = "idempotency_key_reused"


class CallbackNotAllowed(InvalidRequest):
    """A callback URL that is not among ``MODEL_PROXY_CALLBACK_ORIGINS`` (or callbacks are not
    allowed at all): refused at submit, and again before each delivery."""

    code = "callback_not_allowed"


class TooManyCallbacks(InvalidRequest):
    """The job already has as many callbacks as it keeps (``MODEL_PROXY_MAX_CALLBACKS_PER_JOB``)."""

    code = "too_many_callbacks"


# --- something the request names does not exist ----------------------------------------------


class NotFound(ModelProxyError):
    code = "not_found"


class UnknownJob(NotFound):
    code = "unknown_job"


class UnknownModel(NotFound):
    code = "unknown_model"


class UnknownServer(NotFound):
    code = "unknown_server"


class NoResultObject(NotFound):
    """The job made no DICOM object of the format asked for (``?format=seg`` or ``sr``)."""

    code = "result_object_not_found"


class LevelNotSupported(NotFound):
    code = "level_not_supported"


class DicomNotFound(NotFound):
    code = "dicom_not_found"


# --- a PACS, token server or model failed ----------------------------------------------------


class UpstreamError(ModelProxyError):
    """A PACS, token server or model failed; ``status`` is its HTTP status when it answered."""

    code = "upstream_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        if status in TRANSIENT_HTTP_STATUSES:
            self.transient = True


class PacsFailed(UpstreamError):
    code = "pacs_error"


class PacsAuthFailed(PacsFailed):
    code = "pacs_auth_failed"


class PacsUnreachable(PacsFailed):
    code = "pacs_unreachable"
    transient = True


class AuthTokenNeeded(PacsAuthFailed):
    """A ``token`` server's tokens expired for good: servers.json needs a new authToken."""

    code = "auth_token_needed"


class PacsInstanceTooLarge(PacsFailed):
    """The PACS sent an instance larger than the job's cap (maxInstanceBytes)."""

    code = "pacs_instance_too_large"


class PacsStoreFailed(PacsFailed):
    """The PACS refused to store instances sent with STOW-RS; the message names them."""

    code = "pacs_store_failed"


class InputTooLarge(UpstreamError):
    """What the job fetches from the PACS in all exceeds its cap (maxInputBytes)."""

    code = "input_too_large"


class ModelFailed(UpstreamError):
    code = "model_error"


class ModelUnreachable(ModelFailed):
    code = "model_unreachable"
    transient = True


class BadModelResponse(ModelFailed):
    code = "model_bad_response"


class ModelAnswerTooLarge(ModelFailed):
    """The model's answer is larger than the job's cap (maxAnswerBytes)."""

    code = "model_answer_too_large"


class UnconvertibleAnswer(BadModelResponse):
    """The model's answer cannot be made into a DICOM object (SEG, SR): it names an instance
    that was not sent, or a mask does not match its image."""

    code = "model_answer_unconvertible"


class UpstreamTimeout(ModelProxyError):
    code = "upstream_timeout"


class PacsTimeout(UpstreamTimeout):
    code = "pacs_timeout"


class ModelTimeout(UpstreamTimeout):
    code = "model_timeout"


# --- who is asking -----------------------------------------------------------------------------


class InvalidCredentials(ModelProxyError):
    """The credential presented (an API key or a bearer token) is not valid."""

    code = "invalid_credentials"


class InsufficientScope(ModelProxyError):
    """A valid bearer token that grants neither scope of model-proxy."""

    code = "insufficient_scope"


class TooManyFailures(ModelProxyError):
    """Too many wrong secrets were presented for this API key id a moment ago: further
    attempts for it are refused unchecked until ``retry_after`` seconds have passed."""

    code = "too_many_failures"

    def __init__(self, message: str, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- the state of a job -----------------------------------------------------------------------


class JobConflict(ModelProxyError):
    """The job is not in a state that allows what was asked."""

    code = "job_conflict"


class JobFinished(JobConflict):
    code = "job_finished"


class IdempotencyKeyInFlight(JobConflict):
    """The first request with this ``Idempotency-Key`` is still making its job."""

    code = "idempotency_key_in_flight"


class JobNotSucceeded(JobConflict):
    """Only a succeeded job's DICOM objects can be stored again."""

    code = "job_not_succeeded"


class JobGone(ModelProxyError):
    """What was asked for existed once and is gone for good."""

    code = "gone"


class JobCancelled(JobGone):
    code = "job_cancelled"


class ResultExpired(JobGone):
    code = "result_expired"


# --- model-proxy's own infrastructure ---------------------------------------------------------


class ServiceUnavailable(ModelProxyError):
    code = "service_unavailable"


class QueueUnavailable(ServiceUnavailable):
    """Redis refused, reset or did not answer in time."""

    code = "redis_unavailable"
    transient = True


class IdentityProviderUnavailable(ServiceUnavailable):
    """The identity provider's discovery document or signing keys could not be fetched."""

    code = "idp_unavailable"
    transient = True


class ServiceBusy(ServiceUnavailable):
    """The process is at a load limit: every Redis connection was in use for the whole wait
    (``MODEL_PROXY_REDIS_MAX_CONNECTIONS``), or as many API key checks as may wait already do
    (``MODEL_PROXY_API_KEY_WAITING_CHECKS``); ask again shortly."""

    code = "busy"
    transient = True
    retry_after = 1


class AuditUnavailable(ServiceUnavailable):
    """The audit log could not record an access, so its data is not served (fail closed)."""

    code = "audit_unavailable"


class QueueFull(ModelProxyError):
    """Too many jobs of this model are waiting; ``retry_after`` says when to try again."""

    code = "queue_full"

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyJobs(QueueFull):
    """The caller already waits for its limit of unfinished jobs
    (``MODEL_PROXY_MAX_QUEUED_PER_CLIENT``); ``retry_after`` says when to try again."""

    code = "too_many_jobs"


# --- who may ask ------------------------------------------------------------------------------


class Unauthenticated(ModelProxyError):
    """The route needs a credential and the request carried none."""

    code = "unauthenticated"


class Forbidden(ModelProxyError):
    """The caller is known, and may not do what it asked."""

    code = "forbidden"


class NotYourJob(Forbidden):
    """Only those who asked for a job (and admins) may cancel it."""

    code = "not_your_job"


class AdminRequired(Forbidden):
    code = "admin_required"


class OriginNotAllowed(Forbidden):
    """The request came from a web page that ``MODEL_PROXY_CORS_ORIGINS`` does not allow."""

    code = "origin_not_allowed"


class HostNotAllowed(InvalidRequest):
    """The request's ``Host`` is a name ``MODEL_PROXY_ALLOWED_HOSTS`` does not list (a DNS
    rebinding page's requests name the attacker's host)."""

    code = "host_not_allowed"


def _all_subclasses(cls: type[ModelProxyError]) -> list[type[ModelProxyError]]:
    found: list[type[ModelProxyError]] = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


def error_from_code(code: str, message: str) -> ModelProxyError:
    """Rebuild the error a worker recorded, so the broker can map it to its HTTP status."""
    for cls in _all_subclasses(ModelProxyError)[1:]:  # the base class is never recorded
        if cls.code == code:
            return cls(message)
    return InternalError(message)


def is_transient(error: BaseException) -> bool:
    """Whether a retry of the call that raised ``error`` may succeed: only our marked errors."""
    return isinstance(error, ModelProxyError) and error.transient
