"""What ``model-proxy check`` says of the access settings (model_proxy/access_report.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import free_port
from model_proxy.access_report import AccessRow, access_rows
from model_proxy.check import EXIT_DOWN, EXIT_OK, run_check
from model_proxy.shared.api_keys import ApiKeyFile
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.settings import Settings
from tests.support.identity_provider import AUDIENCE, identity_provider
from tests.unit.test_origins import MODELS, SERVERS


def _settings(folder: Path, **values: Any) -> Settings:
    return Settings(api_keys_file=folder / "api-keys.json", **values)


def _rows(settings: Settings, host: str = "127.0.0.1") -> dict[str, AccessRow]:
    return {row.setting: row for row in access_rows(settings, host, 2.0)}


@pytest.mark.parametrize(
    ("host", "values", "keys", "anonymous"),
    [
        ("127.0.0.1", {}, False, "viewer"),
        ("0.0.0.0", {}, False, "undecided"),
        ("0.0.0.0", {}, True, "none"),
        ("0.0.0.0", {"jwt_issuer": "http://127.0.0.1:1/r", "jwt_audience": "m"}, False, "none"),
        ("0.0.0.0", {"anonymous": "viewer"}, True, "viewer"),
        ("::1", {"anonymous": "none"}, False, "none"),
    ],
)
def test_the_anonymous_decision_for_the_host(
    tmp_path: Path, host: str, values: dict[str, str], keys: bool, anonymous: str
) -> None:
    if keys:
        ApiKeyFile(tmp_path / "api-keys.json").add("ward-7")
    row = _rows(_settings(tmp_path, **values), host)["anonymous"]
    assert row.value == anonymous
    assert row.status == ("down" if anonymous == "undecided" else "ok")


def test_the_number_of_keys_is_shown_and_never_a_key(tmp_path: Path) -> None:
    keys = ApiKeyFile(tmp_path / "api-keys.json")
    made = [keys.add(name)[1] for name in ("ward-7", "ward-8")]
    rows = access_rows(_settings(tmp_path), "127.0.0.1", 2.0)
    assert _rows(_settings(tmp_path))["api keys"].value == "2"
    assert not any(key in repr(rows) for key in made)


def test_the_issuer_its_audience_and_its_keys_are_checked(tmp_path: Path) -> None:
    with identity_provider("RSA", "EC") as provider:
        rows = _rows(_settings(tmp_path, jwt_issuer=provider.issuer, jwt_audience=AUDIENCE))
    assert rows["oidc issuer"].value == provider.issuer
    assert rows["oidc issuer"].detail == f"audience {AUDIENCE}"
    assert rows["jwks"].value == provider.jwks_url  # found through the discovery document
    assert (rows["jwks"].status, rows["jwks"].detail) == ("ok", "2 signing keys")


def test_an_unreachable_identity_provider_is_down(tmp_path: Path) -> None:
    issuer = f"http://127.0.0.1:{free_port()}/realms/hospital"
    rows = _rows(_settings(tmp_path, jwt_issuer=issuer, jwt_audience=AUDIENCE))
    assert rows["jwks"].status == "down"
    assert "could not be fetched" in rows["jwks"].detail


def test_without_an_issuer_oidc_is_not_configured(tmp_path: Path) -> None:
    rows = _rows(_settings(tmp_path, cors_origins="https://viewer.example"))
    assert (rows["oidc issuer"].value, rows["oidc issuer"].status) == ("not configured", "unset")
    assert "jwks" not in rows
    assert rows["cors origins"].detail == "https://viewer.example"


def test_half_an_oidc_configuration_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODEL_PROXY_JWT_AUDIENCE"):
        access_rows(_settings(tmp_path, jwt_issuer="https://idp.example/r"), "127.0.0.1", 2.0)


def test_check_prints_the_access_table_and_fails_when_the_keys_cannot_be_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "servers.json").write_text(SERVERS)
    (tmp_path / "models.json").write_text(MODELS)
    monkeypatch.setattr("model_proxy.check.check_catalog", lambda *args: [])  # only access
    base = {
        "servers_file": tmp_path / "servers.json",
        "models_file": tmp_path / "models.json",
        "jwt_audience": AUDIENCE,
    }
    with identity_provider() as provider:
        out = io.StringIO()
        settings = _settings(tmp_path, jwt_issuer=provider.issuer, **base)
        assert run_check(settings, 1.0, out, "0.0.0.0") == EXIT_OK
    lines = out.getvalue().splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("ACCESS"))) :]
    assert [line.split()[0] for line in table] == [
        "ACCESS",
        "anonymous",
        "api",
        "oidc",
        "jwks",
        "cors",
        "allowed",
    ]
    assert table[1].split()[1:3] == ["none", "ok"]
    assert table[4].split()[2:5] == ["ok", "1", "signing"]

    gone = f"http://127.0.0.1:{free_port()}/realms/hospital"
    out = io.StringIO()
    assert run_check(_settings(tmp_path, jwt_issuer=gone, **base), 1.0, out) == EXIT_DOWN
    assert "jwks" in out.getvalue() and "DOWN" in out.getvalue().split("ACCESS")[1]
