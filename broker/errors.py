"""The one place where errors become HTTP answers: ``{"message": ..., "code": ...}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_proxy.shared import errors as ours
from model_proxy.shared.errors import ModelProxyError

__all__ = ["error_response", "install_error_handlers", "status_for"]

log = logging.getLogger(__name__)

# Most specific first: the first class in an error's MRO that is listed here decides.
_STATUS: dict[type[ModelProxyError], int] = {
    ours.InvalidUid: 422,
    ours.BodyTooLarge: 413,
    ours.UnsupportedMediaType: 415,
    ours.IdempotencyKeyReused: 422,
    ours.CallbackNotAllowed: 422,
    ours.TooManyCallbacks: 422,
    ours.InvalidRequest: 400,
    ours.InvalidCredentials: 401,
    ours.InsufficientScope: 403,
    ours.TooManyFailures: 429,
    ours.NotFound: 404,
    ours.JobConflict: 409,
    ours.JobGone: 410,
    ours.QueueFull: 429,
    ours.Unauthenticated: 401,
    ours.Forbidden: 403,
    ours.UpstreamError: 502,
    ours.UpstreamTimeout: 504,
    ours.ServiceUnavailable: 503,
    ours.ConfigError: 500,
    ours.ModelProxyError: 500,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def status_for(error: ModelProxyError) -> int:
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


# the RFC 6750 challenge that goes with each refusal of a credential
_CHALLENGES: dict[type[ModelProxyError], str] = {
    ours.Unauthenticated: "Bearer",
    ours.InvalidCredentials: 'Bearer error="invalid_token"',
    ours.InsufficientScope: 'Bearer error="insufficient_scope"',
}


def error_response(error: ModelProxyError, **extra: str) -> JSONResponse:
    headers = {} if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    challenge = _CHALLENGES.get(type(error))
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return JSONResponse(
        {"message": error.message, "code": error.code, **extra},
        status_code=status_for(error),
        headers=headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    async def on_model_proxy_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ModelProxyError)
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        ]
        return JSONResponse(
            {"message": "; ".join(problems) or "invalid request", "code": "invalid_request"},
            status_code=422,
        )

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(
            {"message": message, "code": _HTTP_CODES.get(exc.status_code, "http_error")},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while answering a request", exc_info=exc)
        return JSONResponse(
            {"message": "internal error; see the server log", "code": "internal_error"},
            status_code=500,
        )

    app.add_exception_handler(ModelProxyError, on_model_proxy_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
