"""What the OpenAPI document says beyond the handlers' signatures: every error status a route
can answer (with the error body and its headers), and ``data-filters``, which the viewer's
routes read from the raw query in several forms."""

from __future__ import annotations

from typing import Any

from model_proxy.broker.schemas import ErrorBody
from model_proxy.shared.datafilters import MAX_FILTERS, PARAMETER

__all__ = ["DATA_FILTERS", "errors"]

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
