"""HTTP sessions for PACS, token servers and models: pooled, one per peer and process."""

from __future__ import annotations

from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

__all__ = ["Timeouts", "new_session", "tls_advice"]


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


def tls_advice(server_id: str, what: str) -> str:
    """The message for a certificate that failed verification, saying which setting to use."""
    return (
        f"server {server_id}: TLS certificate verification of its {what} failed; in "
        'servers.json set "caBundle" to the CA file that signed it, or "tlsVerify": false '
        "for a self-signed local PACS"
    )


def new_session(pool_size: int, user_agent: str = "model-proxy") -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 1))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    # Proxies from the environment must not see PACS traffic or patient data by surprise.
    session.trust_env = False
    return session
