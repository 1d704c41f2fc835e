"""A session per PACS server with its TLS settings and auth, the one kind for every caller."""

from __future__ import annotations

import pytest

from devtools.processes import free_port
from model_proxy.shared.config import Catalog, ModelConfig, ServerConfig, SizeLimits
from model_proxy.shared.dicomweb.auth import BasicAuth, NoAuth
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.http import Timeouts

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
SERVER_UNKNOWN = "1d6d3e4f-6b66-4b5f-9a22-ab8c3f9d2e02"
SECRET = "s3cret-Pa55word"
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
CAPPED_MODEL = "e185a2a3-b4c5-46d7-b1e2-6d7e8f900112"


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


def test_a_source_for_a_job_carries_its_models_size_caps() -> None:
    server = ServerConfig.model_validate({"uri": "https://pacs/dicom-web", "isDefault": True})
    model = {"uri": "http://model/predict", "task": "segmentation", "supports": ["/studies"]}
    capped = ModelConfig.model_validate({**model, "maxInstanceBytes": 10, "maxInputBytes": 20})
    catalog = Catalog(
        servers={SERVER: server},
        models={MODEL: ModelConfig.model_validate(model), CAPPED_MODEL: capped},
        default_server_id=SERVER,
    )
    defaults = SizeLimits(instance=100, input=200, answer=300)
    sessions = ServerSessions(
        catalog, None, Timeouts(1.0, 2.0), refresh_margin=60.0, limits=defaults
    )
    assert sessions.source_for(SERVER).limits == defaults
    assert sessions.source_for(SERVER, MODEL).limits == defaults
    assert sessions.source_for(SERVER, CAPPED_MODEL).limits == SizeLimits(10, 20, 300)
    # a new source per job (its own input count), on the server's one session
    assert sessions.source_for(SERVER, MODEL) is not sessions.source_for(SERVER, MODEL)
    sessions.close()
