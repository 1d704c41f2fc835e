"""A session per PACS server with its TLS settings and auth, the one kind for every caller."""

from __future__ import annotations

import pytest

from devtools.processes import free_port
from model_proxy.shared.config import Catalog, ServerConfig
from model_proxy.shared.dicomweb.auth import BasicAuth, NoAuth
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.http import Timeouts

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
SERVER_UNKNOWN = "1d6d3e4f-6b66-4b5f-9a22-ab8c3f9d2e02"
SECRET = "s3cret-Pa55word"


def test_server_sessions_carry_each_servers_tls_settings_and_auth() -> None:
    servers = {
        SERVER: ServerConfig.model_validate(
            {
                "uri": "https://pacs/dicom-web",
                "authType": "basicAuth",
                "login": "reader",
                "password": SECRET,
                "tlsVerify": False,
            }
        ),
        SERVER_UNKNOWN: ServerConfig.model_validate({"uri": "https://open/dicom-web"}),
    }
    catalog = Catalog(servers=servers, models={}, default_server_id=SERVER)
    sessions = ServerSessions.for_checks(
        catalog,
        f"redis://127.0.0.1:{free_port()}/0",  # only token servers would use it
        timeout=2.0,
        refresh_margin=60.0,
        lock_timeout=30.0,
    )
    session, auth = sessions.get(SERVER.upper())
    assert session.verify is False and isinstance(auth, BasicAuth)
    assert sessions.get(SERVER) == (session, auth)  # one per server, reused
    open_session, open_auth = sessions.get(SERVER_UNKNOWN)
    assert open_session.verify is True and isinstance(open_auth, NoAuth)
    sessions.close()
    with pytest.raises(RuntimeError):
        sessions.get(SERVER)


def test_a_source_per_server_on_that_servers_session_and_timeouts() -> None:
    servers = {
        SERVER: ServerConfig.model_validate(
            {"uri": "https://pacs/dicom-web", "tlsVerify": False, "isDefault": True}
        )
    }
    catalog = Catalog(servers=servers, models={}, default_server_id=SERVER)
    sessions = ServerSessions(catalog, None, Timeouts(1.0, 2.0), pool_size=4, refresh_margin=60.0)
    source = sessions.source_for(SERVER.upper())
    assert source.server_id == SERVER
    assert sessions.source_for(SERVER) is source  # one per server, reused
    session, _ = sessions.get(SERVER)
    assert session.verify is False
    assert session.get_adapter("https://pacs")._pool_maxsize == 4  # type: ignore[attr-defined]
    sessions.close()


def test_a_token_server_needs_the_shared_token_store() -> None:
    servers = {
        SERVER: ServerConfig.model_validate(
            {
                "uri": "https://pacs/dicom-web",
                "authType": "token",
                "authToken": SECRET,
                "signInTokenServer": "https://pacs/token",
            }
        )
    }
    catalog = Catalog(servers=servers, models={}, default_server_id=SERVER)
    sessions = ServerSessions(catalog, None, Timeouts(1.0, 1.0), refresh_margin=60.0)
    with pytest.raises(ConfigError, match="MODEL_PROXY_REDIS_URL"):
        sessions.get(SERVER)
