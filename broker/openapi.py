"""What the OpenAPI document says beyond the handlers' signatures: every error status a route
can answer (with the error body and its headers), ``data-filters``, which the viewer's routes
read from the raw query in several forms, and the security schemes (who may ask)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from model_proxy.shared.datafilters import MAX_FILTERS, PARAMETER
from model_proxy.shared.schemas import ErrorBody

__all__ = ["ANSWER_HEADERS", "DATA_FILTERS", "NOT_MODIFIED", "declare_security", "errors"]

Responses = dict[int | str, dict[str, Any]]

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before asking again",
        "schema": {"type": "string"},
    }
}

_DESCRIPTIONS: dict[int, str] = {
    400: "Bad data filters (`invalid_data_filter`) or request (`invalid_request`)",
    403: "The request's Origin is a web page not allowed to change jobs (`origin_not_allowed`)",
    404: "Unknown model, server or job, an unsupported level, or no such DICOM data",
    409: "The job had already finished (`job_finished`)",
    410: "The job was cancelled, or its result expired",
    422: "A UID that is not a DICOM UID (`invalid_uid`), or a malformed parameter",
    429: "Too many jobs of this model are waiting (`queue_full`); see Retry-After",
    500: "An unexpected error (`internal_error`); details are in the server log",
    502: "The PACS, its token server or the model failed",
    503: "Redis cannot be reached (`redis_unavailable`), or this process is at its load limit "
    "(`busy`, with Retry-After)",
    504: "The PACS or the model did not answer in time",
}


def errors(*statuses: int) -> Responses:
    """The error answers with these statuses: ``{"message", "code", "jobId"?}``."""
    responses: Responses = {}
    for status in statuses:
        response: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status in (429, 503):
            response["headers"] = _RETRY_AFTER
        responses[status] = response
    return responses


_UID = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$", "maxLength": 64}
_FILTER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "dataKey": {"type": "string", "description": "A key the model declares in `dataFilter`"},
        "uuid": {**_UID, "description": "The Series (or SOP Instance) UID chosen"},
        "dataFilter": {
            "type": "array",
            "description": "Instance filters of a series filter (study level)",
            "items": {
                "type": "object",
                "properties": {"dataKey": {"type": "string"}, "uuid": _UID},
                "required": ["dataKey", "uuid"],
            },
        },
    },
    "required": ["dataKey", "uuid"],
}

_STRING = {"type": "string"}
ANSWER_HEADERS: dict[str, Any] = {
    "X-Job-Id": {"description": "The job that made it", "schema": _STRING},
    "ETag": {"description": "The answer's strong entity tag", "schema": _STRING},
    "Content-Encoding": {
        "description": "`gzip` when the client accepts it and the answer is stored so",
        "schema": _STRING,
    },
    "Vary": {"description": "`Accept-Encoding`", "schema": _STRING},
}
"""Headers of an answer with the model's document."""

NOT_MODIFIED: dict[str, Any] = {
    "description": "`If-None-Match` names the answer's ETag: the client has it (no body)",
    "headers": {name: ANSWER_HEADERS[name] for name in ("X-Job-Id", "ETag", "Vary")},
}

DATA_FILTERS: dict[str, Any] = {
    "name": PARAMETER,
    "in": "query",
    "required": False,
    "description": (
        "Which series (study level) or instances (series level) fill the inputs the model "
        "declares in its `dataFilter`; undeclared keys are ignored. A JSON array of "
        '`{"dataKey", "uuid"}` objects, or one object (the parameter may repeat, also as '
        "`data-filters[]`), or qs brackets: `data-filters[0][dataKey]=a&data-filters[0][uuid]=1.2`"
        f" (nested: `data-filters[0][dataFilter][0][dataKey]`). At most {MAX_FILTERS} filters."
    ),
    "content": {
        "application/json": {"schema": {"anyOf": [{"type": "array", "items": _FILTER}, _FILTER]}}
    },
}


_CHALLENGE = {
    "WWW-Authenticate": {
        "description": 'The challenge: `Bearer`, or `Bearer error="invalid_token"` or '
        '`Bearer error="insufficient_scope"`',
        "schema": {"type": "string"},
    }
}
_ACCESS_ANSWERS: dict[str, str] = {
    "401": "No credential while anonymous access is off (`unauthenticated`), or a credential "
    "that is not valid (`invalid_credentials`)",
    "403": "A token that grants neither `read:model` nor `admin:model` (`insufficient_scope`)",
    "503": "The identity provider's signing keys cannot be fetched (`idp_unavailable`)",
}


def declare_security(
    app: FastAPI, *, open_paths: frozenset[str], anonymous: bool, discovery_url: str | None
) -> None:
    """Make ``app``'s OpenAPI document declare how to authenticate: an HTTP bearer scheme (an
    API key or an OIDC token), an API key in ``X-API-Key``, and with an issuer an
    openIdConnect scheme at its discovery document; every route but ``open_paths`` lists them
    (with an empty requirement too when ``anonymous`` requests are answered) and documents its
    401 and 403 answers."""
    describe = app.openapi

    def openapi() -> dict[str, Any]:
        document = describe()
        components = document.setdefault("components", {})
        if "securitySchemes" in components:
            return document  # declared already
        components["securitySchemes"] = _schemes(discovery_url)
        requirements: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]
        if discovery_url is not None:
            requirements.append({"oidc": ["read:model"]})
        if anonymous:
            requirements.append({})
        for path, operations in document.get("paths", {}).items():
            if path in open_paths:
                continue
            for operation in operations.values():
                operation["security"] = requirements
                _add_access_answers(operation["responses"])
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _schemes(discovery_url: str | None) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`model-proxy keys add`) or an OIDC access token of the "
            "configured issuer with scope `read:model` or `admin:model`",
        },
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    if discovery_url is not None:
        schemes["oidc"] = {"type": "openIdConnect", "openIdConnectUrl": discovery_url}
    return schemes


def _add_access_answers(responses: dict[str, Any]) -> None:
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for status, description in _ACCESS_ANSWERS.items():
        known = responses.get(status)
        if known is not None:
            known["description"] = f"{known['description']}; or: {description}"
        elif status != "503":
            responses[status] = {"description": description, "content": body}
        if status == "401":
            responses[status]["headers"] = _CHALLENGE
