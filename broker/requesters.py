"""Who is asking, as the job records name it, and the access rules of the routes that are not
open to every caller.

A caller with a credential is its principal's name (the API key's name, or the token's
subject). An anonymous caller is ``anonymous@<client address>``: anonymous callers from one
address share their jobs, their cancels and their quota. The address is the peer of the TCP
connection; ``X-Forwarded-For`` is not trusted (``serve`` turns uvicorn's proxy headers off), so
behind a reverse proxy every anonymous caller is the proxy's address: give such clients keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from model_proxy.broker.access import ANONYMOUS, Principal
from model_proxy.broker.deps import Services
from model_proxy.shared.errors import AdminRequired, Unauthenticated
from model_proxy.shared.schemas import ErrorBody

__all__ = [
    "ADMIN_WHEN_CLOSED",
    "Caller",
    "CallerParam",
    "admin_when_closed",
    "caller",
    "named_caller",
]


@dataclass(frozen=True)
class Caller:
    """A request's principal, and the name the job records know it by."""

    principal: Principal
    requester: str

    @property
    def admin(self) -> bool:
        return self.principal.role == "admin"

    @property
    def anonymous(self) -> bool:
        return self.principal.anonymous


async def caller(request: Request) -> Caller:
    """The caller of ``request`` (the principal the authentication middleware found)."""
    return _caller(request)


def _caller(request: Request) -> Caller:
    principal: Principal = getattr(request.state, "principal", ANONYMOUS)
    if principal.anonymous:
        address = request.client.host if request.client is not None else "unknown"
        return Caller(principal, f"anonymous@{address}")
    return Caller(principal, principal.name)


CallerParam = Annotated[Caller, Depends(caller)]


async def named_caller(request: Request) -> Caller:
    """The caller, who must have a credential: 401 ``unauthenticated`` when anonymous."""
    found = _caller(request)
    if found.anonymous:
        raise Unauthenticated(
            "send a credential (Authorization: Bearer ...): jobs are listed to their requesters"
        )
    return found


ADMIN_WHEN_CLOSED: dict[int | str, dict[str, object]] = {
    403: {
        "model": ErrorBody,
        "description": "Anonymous access is refused here and the caller is not an admin "
        "(`admin_required`)",
    }
}
"""The OpenAPI answer of the routes guarded by :func:`admin_when_closed`."""


async def admin_when_closed(request: Request, services: Services) -> None:
    """With anonymous access refused (``MODEL_PROXY_ANONYMOUS=none``) only an admin passes;
    with anonymous viewers allowed, everyone does (as the viewer's routes)."""
    if services.settings.anonymous != "none":
        return
    if not _caller(request).admin:
        raise AdminRequired("this route needs an admin's credential")
