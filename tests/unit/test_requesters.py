"""Who is asking, as the job records name it (``broker/requesters.py``), and the client address
that names an anonymous caller (``serve`` does not take it from ``X-Forwarded-For``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import Request

from model_proxy.broker.access import ANONYMOUS, Principal
from model_proxy.broker.requesters import Caller
from model_proxy.broker.requesters import caller as caller_of
from tests.unit.test_serve_access import serve_options


def _request(principal: Principal | None, client: tuple[str, int] | None) -> Request:
    scope: dict[str, Any] = {"type": "http", "headers": [], "client": client}
    if principal is not None:
        scope["state"] = {"principal": principal}
    return Request(scope)


def caller(request: Request) -> Caller:
    return asyncio.run(caller_of(request))


def test_a_named_caller_is_its_principals_name() -> None:
    principal = Principal("ward-7", "viewer")
    assert caller(_request(principal, ("10.0.0.5", 5000))) == Caller(principal, "ward-7")
    assert caller(_request(Principal("ops", "admin"), None)).admin


def test_an_anonymous_caller_is_named_by_its_client_address() -> None:
    found = caller(_request(ANONYMOUS, ("10.0.0.5", 5000)))
    assert found.requester == "anonymous@10.0.0.5"
    assert found.anonymous and not found.admin
    assert caller(_request(None, ("10.0.0.6", 1))).requester == "anonymous@10.0.0.6"


def test_serve_takes_the_client_address_from_the_connection_not_x_forwarded_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = serve_options(tmp_path, monkeypatch)
    assert options["proxy_headers"] is False
