"""Reading a ``text/event-stream`` (the HTML Living Standard's server-sent events): lines in,
events out. Pure, no I/O: the caller feeds the lines of a streamed response."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["ServerEvent", "parse_events"]


@dataclass(frozen=True)
class ServerEvent:
    """One dispatched event: its ``event`` name (``message`` when unnamed), the last ``id``
    seen (it carries over to later events, as the standard says), and its ``data`` lines
    joined with newlines."""

    kind: str
    id: str | None
    data: str


def parse_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """The events of a stream given as lines without their line ends. Comments (``:``) and
    unknown fields are skipped; an event without data is not dispatched; an event not ended by
    a blank line when the lines run out is dropped, as a browser drops it."""
    kind, last_id = "", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(kind or "message", last_id, "\n".join(data))
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            last_id = value
