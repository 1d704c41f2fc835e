"""What ``serve`` says at start about its anonymous access: one warning when requests without
credentials are answered although credentials are configured (the operator may mean none)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from model_proxy import cli
from model_proxy.shared.api_keys import ApiKeyFile
from model_proxy.shared.settings import Settings
from tests.unit.test_origins import MODELS, SERVERS


def serve_options(
    folder: Path, monkeypatch: pytest.MonkeyPatch, host: str = "127.0.0.1", **values: Any
) -> dict[str, Any]:
    """Run ``serve --host host`` with configs in ``folder`` up to uvicorn, which does not
    listen: the options it was given."""
    options: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **given: options.update(given))
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)
    (folder / "servers.json").write_text(SERVERS)
    (folder / "models.json").write_text(MODELS)
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",
        servers_file=folder / "servers.json",
        models_file=folder / "models.json",
        api_keys_file=folder / "api-keys.json",
        **values,
    )
    args = argparse.Namespace(host=host, port=8002, anonymous=None)
    assert cli._serve(args, settings) == 0
    return options


OIDC = {"jwt_issuer": "https://idp.example/r", "jwt_audience": "mp"}


@pytest.mark.parametrize(
    ("host", "values", "keys", "warned"),
    [
        ("0.0.0.0", {"anonymous": "viewer"}, True, True),
        ("127.0.0.1", {}, True, True),  # loopback: viewer, although keys exist
        ("0.0.0.0", {"anonymous": "viewer", **OIDC}, False, True),
        ("0.0.0.0", {"anonymous": "viewer"}, False, False),  # no credentials: viewer is all
        ("0.0.0.0", {}, True, False),  # keys: none
        ("127.0.0.1", {"anonymous": "none"}, True, False),
    ],
)
def test_serve_warns_once_when_viewer_is_in_effect_beside_credentials(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    host: str,
    values: dict[str, Any],
    keys: bool,
    warned: bool,
) -> None:
    key = ApiKeyFile(tmp_path / "api-keys.json").add("ward-7")[1] if keys else "-"
    with caplog.at_level(logging.INFO, logger="model_proxy"):
        serve_options(tmp_path, monkeypatch, host, **values)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if not warned:
        assert warnings == []
        return
    (line,) = warnings
    assert "MODEL_PROXY_ANONYMOUS=none" in line and "\n" not in line
    assert ("API keys" in line) == keys and ("OIDC issuer" in line) == ("jwt_issuer" in values)
    assert key not in line
