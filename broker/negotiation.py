"""What a client wants of a stored answer: gzip or not (``Accept-Encoding``), and whether it
already holds the answer it would get (``If-None-Match``). Pure header parsing (RFC 9110
§12.5.3 and §13.1.2), no I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Negotiated", "accepts_gzip", "etag_matches", "negotiate"]

_GZIP_NAMES = ("gzip", "x-gzip")
_ENTITY_TAG = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')


def _quality(params: list[str]) -> float:
    """The ``q`` of one Accept-Encoding element: 1 when absent, 0 when not a number in 0-1."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepts_gzip(header: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip: named (or ``x-gzip``) with a ``q`` above 0, or
    not named and ``*`` is, with a ``q`` above 0. No header: identity only."""
    named: float | None = None
    wildcard: float | None = None
    for element in (header or "").split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if coding in _GZIP_NAMES:
            q = _quality(params)
            named = q if named is None else max(named, q)
        elif coding == "*":
            wildcard = _quality(params)
    chosen = named if named is not None else wildcard
    return chosen is not None and chosen > 0


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (compared weakly, as the RFC asks) or is ``*``."""
    if header is None:
        return False
    text = header.strip()
    if text == "*":
        return True
    wanted = etag.removeprefix("W/")
    position = 0
    while text[position:].strip():
        match = _ENTITY_TAG.match(text, position)
        if match is None:
            return False  # not a list of entity tags: nothing matches
        if match.group(1) == wanted:
            return True
        position = match.end()
    return False


@dataclass(frozen=True)
class Negotiated:
    """From a request's headers: whether to send gzip, and the client's ``If-None-Match``."""

    gzip: bool = False
    if_none_match: str | None = None


def negotiate(headers: Mapping[str, str]) -> Negotiated:
    """Read ``Accept-Encoding`` and ``If-None-Match`` (header names in lower case, as
    Starlette's headers give them whatever their case)."""
    return Negotiated(
        gzip=accepts_gzip(headers.get("accept-encoding")),
        if_none_match=headers.get("if-none-match"),
    )
