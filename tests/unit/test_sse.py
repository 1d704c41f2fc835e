"""The CLI's reader of ``text/event-stream`` (``model_proxy/sse.py``) on canned lines."""

from __future__ import annotations

from model_proxy.sse import ServerEvent, parse_events


def test_events_comments_and_ids_as_the_standard_reads_them() -> None:
    lines = [
        "retry: 2000",
        "",
        ": keep-alive",
        "",
        "event: state",
        "id: 17",
        'data: {"state":',
        'data:"queued"}',
        "",
        "data: no name, the id carries over",
        "",
        "event: end",
        "id: 18",
        "data: last",
        "",
        "event: cut",
        "data: not ended by a blank line",
    ]
    assert list(parse_events(lines)) == [
        ServerEvent("state", "17", '{"state":\n"queued"}'),
        ServerEvent("message", "17", "no name, the id carries over"),
        ServerEvent("end", "18", "last"),
    ]


def test_an_event_without_data_is_not_dispatched() -> None:
    assert list(parse_events(["event: state", "id: 1", "", "unknown: field", ""])) == []
