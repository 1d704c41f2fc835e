"""The ``model-proxy`` command as a user runs it: start-up errors, and everything in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from devtools.processes import ManagedProcess, free_port, wait_until
from model_proxy.shared.api_keys import ApiKeyFile
from tests.support.deployment import Deployment, Ids, PacsData

pytestmark = pytest.mark.integration


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_proxy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_PROXY_")}
    return {**env, **extra}


@pytest.fixture()
def configs(tmp_path: Path) -> Path:
    (tmp_path / "models.json").write_text(
        json.dumps(
            {
                Ids.SEGMENTATION: {
                    "uri": "http://127.0.0.1:9/x",
                    "task": "segmentation",
                    "supports": ["/studies"],
                }
            }
        )
    )
    return tmp_path


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ({Ids.PACS: {"isDefault": True}}, f'server "{Ids.PACS}": field "uri": Field required'),
        (
            {
                Ids.PACS: {"uri": "http://a/dicom-web", "isDefault": True},
                Ids.PACS_SLOW: {"uri": "http://b/dicom-web", "isDefault": True},
            },
            "more than one server has isDefault true",
        ),
        (
            {
                Ids.PACS: {
                    "uri": "http://a",
                    "authType": "basicAuth",
                    "login": "u",
                    "password": "${MP_TEST_UNSET_VARIABLE}",
                }
            },
            f'server "{Ids.PACS}": field "password": environment variable MP_TEST_UNSET_VARIABLE',
        ),
        ({"not-a-uuid": {"uri": "http://a"}}, 'server "not-a-uuid": the key must be a UUID'),
        (
            {Ids.PACS: {"uri": "http://a", "authType": "basicAuth", "login": "u"}},
            "authType 'basicAuth' needs password",
        ),
    ],
)
def test_an_invalid_servers_json_stops_the_start_naming_file_key_and_field(
    configs: Path, servers: dict[str, object], expected: str
) -> None:
    (configs / "servers.json").write_text(json.dumps(servers))

    result = run_cli("serve", "--port", str(free_port()), cwd=configs, env=clean_env())

    assert result.returncode == 2
    assert "servers.json" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_named(configs: Path) -> None:
    result = run_cli("serve", cwd=configs, env=clean_env())
    assert result.returncode == 2
    assert "servers.json: file not found" in result.stderr


def test_worker_without_a_redis_url_says_what_to_do(configs: Path) -> None:
    result = run_cli("worker", cwd=configs, env=clean_env())
    assert result.returncode == 2
    assert "MODEL_PROXY_REDIS_URL" in result.stderr


def test_serve_without_a_redis_url_runs_everything_in_one_process(
    tmp_path: Path, deployment: Deployment, pacs: PacsData
) -> None:
    """The quickstart: embedded Redis, in-process worker, a viewer request answered."""
    for name in ("servers.json", "models.json"):
        (tmp_path / name).write_text((deployment.workdir / name).read_text())
    port = free_port()
    env = clean_env(MP_TEST_PACS_PASSWORD=pacs.orthanc.password)
    process = ManagedProcess(
        "serve",
        [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)],
        tmp_path / "serve.log",
        env=env,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{base}/healthz", timeout=1).ok,
            60,
            "serve",
            alive=lambda: process.alive,
        )
        item = pacs.series_b[0]
        response = requests.get(
            f"{base}/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}"
            f"/series/{item.series_uid}",
            timeout=60,
        )

        assert response.status_code == 200, response.text
        frames = response.json()[item.study_uid][item.series_uid]
        assert {k for k in frames if k != "metadata"} == {i.sop_uid for i in pacs.series_b}
        mask = np.array(frames[item.sop_uid]["segments"][0]["points"])
        assert mask.shape == (item.rows, item.columns)
        assert "embedded Redis" in process.log_text()
        assert (tmp_path / "model-proxy-data").is_dir()
    finally:
        process.stop()
    assert process.process.returncode == 0, process.log_text()[-2000:]
    redis_log = (tmp_path / "model-proxy-data" / "redis.log").read_text()
    assert "ready to exit" in redis_log.lower() or "bye" in redis_log.lower()


def test_tls_writes_a_certificate_that_serve_uses_for_https(
    tmp_path: Path, deployment: Deployment, pacs: PacsData
) -> None:
    for name in ("servers.json", "models.json"):
        (tmp_path / name).write_text((deployment.workdir / name).read_text())
    env = clean_env(
        MP_TEST_PACS_PASSWORD=pacs.orthanc.password, MODEL_PROXY_REDIS_URL=deployment.redis.url
    )

    made = run_cli("tls", cwd=tmp_path, env=env)
    again = run_cli("tls", cwd=tmp_path, env=env)

    assert made.returncode == 0, made.stderr
    assert "127.0.0.1" in made.stdout
    assert (tmp_path / "zhiva.key").stat().st_mode & 0o777 == 0o600
    assert again.returncode == 2
    assert "--force" in again.stderr
    port = free_port()
    process = ManagedProcess(
        "https-serve",
        [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)],
        tmp_path / "serve.log",
        env=env,
        cwd=tmp_path,
    )
    base = f"https://127.0.0.1:{port}"
    cert = str(tmp_path / "zhiva.crt")
    try:
        wait_until(
            lambda: requests.get(f"{base}/healthz", verify=cert, timeout=1).ok,
            60,
            "https serve",
            alive=lambda: process.alive,
        )
        assert "serving over HTTPS" in process.log_text()
    finally:
        process.stop()


def test_a_certificate_without_its_key_stops_the_start(configs: Path) -> None:
    (configs / "servers.json").write_text(json.dumps({Ids.PACS: {"uri": "http://a/dicom-web"}}))
    (configs / "zhiva.crt").write_text("not used")

    result = run_cli("serve", cwd=configs, env=clean_env())

    assert result.returncode == 2
    assert "zhiva.key" in result.stderr
    assert "model-proxy tls" in result.stderr


def test_infer_and_jobs_talk_to_a_running_api(
    tmp_path: Path, deployment: Deployment, pacs: PacsData, worker: ManagedProcess
) -> None:
    port = free_port()
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("cli-user")
    env = {
        **deployment.environ,
        "MODEL_PROXY_API_URL": f"http://127.0.0.1:{port}",
        "MODEL_PROXY_API_KEYS_FILE": str(tmp_path / "api-keys.json"),
        "MODEL_PROXY_API_KEY": key,  # jobs are listed to those who asked for them
    }
    api = ManagedProcess(
        "api-for-cli",
        [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)],
        tmp_path / "api.log",
        env=env,
    )
    item = pacs.series_a[0]
    try:
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok,
            60,
            "api",
            alive=lambda: api.alive,
        )
        inferred = run_cli(
            "infer",
            Ids.SEGMENTATION,
            item.study_uid,
            item.series_uid,
            "--no-cache",
            "--output",
            str(tmp_path / "result.json"),
            cwd=tmp_path,
            env=env,
        )
        listed = run_cli("jobs", "--limit", "5", cwd=tmp_path, env=env)
    finally:
        api.stop()

    assert inferred.returncode == 0, inferred.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    frames = result[item.study_uid][item.series_uid]
    assert {k for k in frames if k != "metadata"} == {i.sop_uid for i in pacs.series_a}
    assert "succeeded" in inferred.stderr
    assert listed.returncode == 0, listed.stderr
    assert "succeeded" in listed.stdout


def test_check_prints_what_answered_and_exits_1_when_something_is_down(
    tmp_path: Path, deployment: Deployment, pacs: PacsData
) -> None:
    for name in ("servers.json", "models.json"):
        (tmp_path / name).write_text((deployment.workdir / name).read_text())
    env = clean_env(MP_TEST_PACS_PASSWORD=pacs.orthanc.password)

    result = run_cli("check", "--timeout", "2", cwd=tmp_path, env=env)

    assert result.returncode == 1, result.stderr
    rows = {
        line.split()[1]: line.split()[3]
        for line in result.stdout.splitlines()
        if line.startswith(("server ", "model "))
    }
    assert rows[Ids.PACS] == "up"
    assert rows[Ids.PACS_WRONG_PASSWORD] == "DOWN"
    assert rows[Ids.PACS_UNREACHABLE] == "DOWN"
    assert rows[Ids.SEGMENTATION] == "up"  # its statusUri
    assert rows[Ids.ANNOTATION] == "unknown"  # no statusUri
    assert pacs.orthanc.password not in result.stdout
    assert "not-the-Password-71" not in result.stdout


def test_check_exits_0_when_everything_answers(
    tmp_path: Path, deployment: Deployment, pacs: PacsData
) -> None:
    servers = json.loads((deployment.workdir / "servers.json").read_text())
    models = json.loads((deployment.workdir / "models.json").read_text())
    (tmp_path / "servers.json").write_text(json.dumps({Ids.PACS: servers[Ids.PACS]}))
    (tmp_path / "models.json").write_text(json.dumps({Ids.SEGMENTATION: models[Ids.SEGMENTATION]}))
    env = clean_env(MP_TEST_PACS_PASSWORD=pacs.orthanc.password)

    result = run_cli("check", cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 of 2 answered" in result.stdout


def test_check_of_an_invalid_file_exits_2(configs: Path) -> None:
    (configs / "servers.json").write_text("{not json")
    result = run_cli("check", cwd=configs, env=clean_env())
    assert result.returncode == 2
    assert "servers.json: not valid JSON" in result.stderr
