"""Which host names the API answers to (broker/hosts.py): the defence against DNS rebinding."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_proxy.broker.app import create_app
from model_proxy.broker.hosts import HostPolicy
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.settings import Settings
from tests.unit.test_origins import _settings

DEFAULT_HOSTS = Settings.model_fields["allowed_hosts"].default
DEFAULT = HostPolicy.from_patterns(DEFAULT_HOSTS)


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8002",
        "LOCALHOST:8002",
        "localhost.:8002",
        "127.0.0.1:8002",
        "192.168.1.20",
        "10.0.0.5:443",
        "[::1]:8002",
        "[fe80::1]",
    ],
)
def test_the_default_answers_localhost_and_ip_literals(host: str) -> None:
    assert DEFAULT.allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example:8002",
        "attacker.example",
        "localhost.attacker.example",
        "127.0.0.1.nip.io:8002",
        "model-proxy",  # a compose service name must be listed
        "::1",  # IPv6 only in brackets
        "[not-an-ip]",
        "",
        ":8002",
    ],
)
def test_the_default_refuses_every_other_name(host: str) -> None:
    assert not DEFAULT.allows(host)


def test_names_subdomains_and_any() -> None:
    policy = HostPolicy.from_patterns(["model-proxy", "*.hospital.example"])
    assert policy.allows("model-proxy:8002")
    assert policy.allows("ai.hospital.example") and policy.allows("a.b.hospital.example:8002")
    assert not policy.allows("hospital.example")  # the bare domain is not a subdomain
    assert not policy.allows("evilhospital.example") and not policy.allows("localhost")
    assert policy.allows("127.0.0.1")  # IP literals, whatever the list
    assert HostPolicy.from_patterns(["*"]).allows("anything.example:1")


@pytest.mark.parametrize(
    "pattern", ["https://proxy.example", "proxy.example:8002", "*.", "a b", "*.*.example"]
)
def test_a_bad_pattern_is_refused_at_start_naming_the_setting(pattern: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODEL_PROXY_ALLOWED_HOSTS"):
        create_app(_settings(tmp_path, allowed_hosts=[pattern]), redis_url="redis://127.0.0.1:1/0")


def _api(folder: Path, host: str, **values: object) -> TestClient:
    settings = _settings(folder, allowed_hosts=DEFAULT_HOSTS, **values)
    app = create_app(settings, redis_url="redis://127.0.0.1:1/0")
    return TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False)


def test_a_rebound_name_is_refused_with_a_code_naming_the_setting(tmp_path: Path) -> None:
    api = _api(tmp_path, "attacker.example:8002")
    for path in ("/jobs", "/jobs/0123456789abcdef0123456789abcdef/result", "/openapi.json"):
        answer = api.get(path)  # same-origin after the rebinding: no Origin, no Sec-Fetch-Site
        assert answer.status_code == 400, path
        assert answer.json()["code"] == "host_not_allowed"
        assert "MODEL_PROXY_ALLOWED_HOSTS" in answer.json()["message"]
        assert "attacker" not in answer.text


def test_the_probes_answer_any_host(tmp_path: Path) -> None:
    api = _api(tmp_path, "model-proxy-7d9f-abcde:8002")
    assert api.get("/healthz").status_code == 200
    assert api.get("/openapi.json").status_code == 400


def test_a_listed_name_is_answered(tmp_path: Path) -> None:
    api = _api(tmp_path, "localhost:8002")
    assert api.get("/openapi.json").status_code == 200
    listed = _settings(tmp_path, allowed_hosts=["ai.hospital.example"])
    app = create_app(listed, redis_url="redis://127.0.0.1:1/0")
    api = TestClient(app, base_url="https://ai.hospital.example:8002")
    assert api.get("/openapi.json").status_code == 200
