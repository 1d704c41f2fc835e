"""The API's FastAPI dependencies: the services built in the lifespan, and what a viewer's
request asks for. No handler reads ``request.app.state`` itself.

Each is ``async def``: FastAPI runs a plain ``def`` dependency in the shared threadpool, and an
ordinary request must not wait for a thread (nor for a flood that holds them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Header, Query, Request

from model_proxy.broker.negotiation import Negotiated, negotiate
from model_proxy.broker.services import BrokerServices
from model_proxy.broker.validation import ViewerPath

__all__ = [
    "AnswerOptions",
    "NegotiatedParam",
    "Services",
    "answer_options",
    "get_services",
    "instance_path",
    "negotiated",
    "series_path",
    "study_path",
]


async def get_services(request: Request) -> BrokerServices:
    """The app's :class:`BrokerServices`, built in its lifespan."""
    return cast(BrokerServices, request.app.state.services)


Services = Annotated[BrokerServices, Depends(get_services)]

ServerParam = Annotated[
    str | None, Query(description="Key of a server in servers.json; the default server if absent")
]


async def study_path(model: str, study: str, server: ServerParam = None) -> ViewerPath:
    """``/{model}/studies/{study}``."""
    return ViewerPath(model, study, server_id=server)


async def series_path(
    model: str, study: str, series: str, server: ServerParam = None
) -> ViewerPath:
    """``/{model}/studies/{study}/series/{series}``."""
    return ViewerPath(model, study, series, server_id=server)


async def instance_path(
    model: str, study: str, series: str, instance: str, server: ServerParam = None
) -> ViewerPath:
    """``/{model}/studies/{study}/series/{series}/instances/{instance}``."""
    return ViewerPath(model, study, series, instance, server)


@dataclass(frozen=True)
class AnswerOptions:
    """How the viewer wants its answer, from its headers and query.

    ``respond_async``: ``Prefer: respond-async`` (RFC 7240) or ``?async=true``, answer 202 at
    once; ``fresh``: ``Cache-Control: no-cache`` (or ``no-store``), run the model again instead
    of answering from the cache; ``query``: every query parameter (the data filters among them);
    ``negotiated``: gzip or not, and ``If-None-Match`` (:mod:`~model_proxy.broker.negotiation`);
    ``wait_seconds``: how long to wait for the job unless ``respond_async`` (``None``:
    ``MODEL_PROXY_SYNC_WAIT_SECONDS``; ``POST /jobs`` sets it from ``Prefer: wait=N``).
    ``callback``: ``?callback=<url>``, POSTed the job when it ends (implies ``respond_async``).
    """

    query: tuple[tuple[str, str], ...]
    respond_async: bool = False
    fresh: bool = False
    negotiated: Negotiated = field(default_factory=Negotiated)
    wait_seconds: float | None = None
    callback: str | None = None


async def answer_options(
    request: Request,
    prefer: Annotated[
        str | None,
        Header(description="`respond-async` (RFC 7240): answer 202 with the job at once"),
    ] = None,
    cache_control: Annotated[
        str | None,
        Header(description="`no-cache` (or `no-store`): run the model again, not the cache"),
    ] = None,
    respond_async: Annotated[
        str | None,
        Query(alias="async", description="`true` (or `1`, `yes`): as `Prefer: respond-async`"),
    ] = None,
    callback: Annotated[
        str | None,
        Query(
            description="A URL (of an origin in `MODEL_PROXY_CALLBACK_ORIGINS`) that the job "
            "is POSTed to, signed, when it ends; implies `Prefer: respond-async` (202)",
        ),
    ] = None,
) -> AnswerOptions:
    preferences = {
        token.split("=")[0].strip()
        for item in (prefer or "").lower().split(",")
        for token in item.split(";")
    }
    flag = (respond_async or "").lower()
    directives = (cache_control or "").lower()
    return AnswerOptions(
        query=tuple(request.query_params.multi_items()),
        respond_async="respond-async" in preferences
        or flag in ("true", "1", "yes")
        or callback is not None,
        fresh=any(d.strip() in ("no-cache", "no-store") for d in directives.split(",")),
        negotiated=negotiate(request.headers),
        callback=callback,
    )


def negotiated(request: Request) -> Negotiated:
    """Gzip or not, and ``If-None-Match``, for routes that answer with a stored result."""
    return negotiate(request.headers)


NegotiatedParam = Annotated[Negotiated, Depends(negotiated)]
