"""compose/docker-compose.yml, the Dockerfile and the Procfile, checked without Docker.

Each service's command must be a real entry point of the package, every variable set for
model-proxy a real setting, and the files mounted where the settings read them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_proxy.cli import _parser
from model_proxy.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
DOCKERFILE = ROOT / "compose" / "Dockerfile"
WORKDIR = "/usr/src/app"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return found


def model_proxy_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose["services"].items()
        if spec.get("command", [""])[0] == "model-proxy"
    }


def test_every_model_proxy_command_is_a_real_entry_point(compose: dict[str, Any]) -> None:
    services = model_proxy_services(compose)
    assert {"broker", "worker"} <= set(services)
    for name, spec in services.items():
        args = _parser().parse_args(spec["command"][1:])
        assert callable(args.run), name


def test_every_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    fields = {f"MODEL_PROXY_{name.upper()}" for name in Settings.model_fields}
    accepted = fields | {"ZHIVA_SHOW_STATUS_PAGE"}
    seen = set(dockerfile_env())
    for spec in model_proxy_services(compose).values():
        seen |= set(spec.get("environment", {}))
    assert seen, "no variables found: the parsing is broken"
    assert seen <= accepted


def test_configs_and_certificates_are_mounted_where_the_settings_read_them(
    compose: dict[str, Any],
) -> None:
    env = dockerfile_env()
    expected = {
        env["MODEL_PROXY_SERVERS_FILE"]: "servers.json",
        env["MODEL_PROXY_MODELS_FILE"]: "models.json",
        f"{WORKDIR}/zhiva.crt": "zhiva.crt",  # serve's default, relative to the workdir
        f"{WORKDIR}/zhiva.key": "zhiva.key",
    }
    assert f"WORKDIR {WORKDIR}" in DOCKERFILE.read_text()
    broker_mounts = {
        target: Path(source).name
        for source, target, *_ in (v.split(":") for v in compose["services"]["broker"]["volumes"])
        if source.startswith(".")  # files of the directory above; named volumes hold data
    }
    assert broker_mounts == expected
    worker_mounts = {
        target for _, target, *_ in (v.split(":") for v in compose["services"]["worker"]["volumes"])
    }
    assert worker_mounts == {env["MODEL_PROXY_SERVERS_FILE"], env["MODEL_PROXY_MODELS_FILE"]}


def _default(value: str) -> str:
    """``${NAME:-default}``: the default; anything else as written."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def test_the_broker_decides_who_may_ask_and_keeps_keys_and_audit_log_on_volumes(
    compose: dict[str, Any],
) -> None:
    broker = compose["services"]["broker"]
    assert broker["command"][broker["command"].index("--host") + 1] == "0.0.0.0"
    environment = broker["environment"]
    # serve beyond loopback refuses to start without this decision, and compose makes none:
    # ${NAME:?message} stops `docker compose up` with the message until the operator decides
    required = re.fullmatch(
        r"\$\{MODEL_PROXY_ANONYMOUS:\?(.+)\}", environment["MODEL_PROXY_ANONYMOUS"]
    )
    assert required is not None, environment["MODEL_PROXY_ANONYMOUS"]
    assert "viewer" in required.group(1) and "none" in required.group(1)
    # the service's name, by which other containers reach it, is a host name it answers to
    assert "broker" in _default(environment["MODEL_PROXY_ALLOWED_HOSTS"]).split(",")
    named = {
        target: source
        for source, target, *_ in (v.split(":") for v in broker["volumes"])
        if not source.startswith(".")
    }
    assert set(named.values()) <= set(compose["volumes"])
    for setting in ("MODEL_PROXY_API_KEYS_FILE", "MODEL_PROXY_AUDIT_LOG"):
        path = _default(environment[setting])
        assert str(Path(path).parent) in named, setting


def test_redis_persists_and_is_healthy_before_model_proxy_starts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "healthcheck" in redis
    for spec in (compose["services"]["broker"], compose["services"]["worker"]):
        assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
        assert spec["environment"]["MODEL_PROXY_REDIS_URL"].startswith("redis://redis:")


def test_demo_parts_are_optional_profiles(compose: dict[str, Any]) -> None:
    assert compose["services"]["orthanc"]["profiles"] == ["demo"]
    assert compose["services"]["example-model"]["profiles"] == ["demo"]
    assert "profiles" not in compose["services"]["broker"]


def test_the_procfile_runs_real_commands_and_matches_the_readme() -> None:
    lines = dict(
        line.split(":", 1)
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(lines) == {"web", "worker"}
    # it listens beyond loopback, and leaves the decision to the operator: serve refuses to
    # start without MODEL_PROXY_ANONYMOUS or credentials, rather than run on a default
    assert "--host 0.0.0.0" in lines["web"]
    assert "--anonymous" not in lines["web"] and "viewer" not in lines["web"]
    readme = (ROOT / "README.md").read_text()
    for command in lines.values():
        # ${NAME:-default}: the platform's value, else the default
        argv = shlex.split(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command))
        assert argv[0] == "model-proxy"
        assert callable(_parser().parse_args(argv[1:]).run)
        assert " ".join(argv[:2]) in readme


def _duration_seconds(value: str) -> float:
    """A compose duration (``1m30s``, ``35s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, value
    return sum(float(number) * units[unit] for number, unit in parts)


def test_docker_waits_longer_than_a_stopping_worker_needs(compose: dict[str, Any]) -> None:
    """A stopping worker lets its jobs run for the grace period, then hands the rest back:
    Docker's SIGKILL must come after both, or the jobs wait for their leases to lapse."""
    worker = compose["services"]["worker"]
    grace = float(
        worker.get("environment", {}).get(
            "MODEL_PROXY_SHUTDOWN_GRACE_SECONDS", Settings().shutdown_grace_seconds
        )
    )
    assert _duration_seconds(worker["stop_grace_period"]) >= grace + 5
