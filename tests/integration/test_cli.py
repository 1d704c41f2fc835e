"""The ``model-proxy`` command as a user runs it: start-up errors, and everything in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
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


@contextmanager
def serving_api(
    port: int,
    env: dict[str, str],
    tmp_path: Path,
    cwd: Path | None = None,
    verify: str | None = None,
) -> Iterator[ManagedProcess]:
    """A ``model-proxy serve`` process on ``port``, ready, stopped at the end; over HTTPS with
    the certificate ``verify`` when given."""
    base = f"https://127.0.0.1:{port}" if verify else f"http://127.0.0.1:{port}"
    api = ManagedProcess(
        "serve",
        [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)],
        tmp_path / "serve.log",
        env=env,
        cwd=cwd,
    )
    try:
        wait_until(
            lambda: requests.get(f"{base}/healthz", verify=verify or True, timeout=1).ok,
            60,
            "serve",
            alive=lambda: api.alive,
        )
        yield api
    finally:
        api.stop()


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
    base = f"http://127.0.0.1:{port}"
    with serving_api(port, env, tmp_path, cwd=tmp_path) as process:
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
    cert = str(tmp_path / "zhiva.crt")
    with serving_api(port, env, tmp_path, cwd=tmp_path, verify=cert) as process:
        assert "serving over HTTPS" in process.log_text()


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
    item = pacs.series_a[0]
    with serving_api(port, env, tmp_path):
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


def test_infer_dicom_out_writes_the_objects_the_job_lists(
    tmp_path: Path, deployment: Deployment, pacs: PacsData, worker: ManagedProcess
) -> None:
    port = free_port()
    env = {**deployment.environ, "MODEL_PROXY_API_URL": f"http://127.0.0.1:{port}"}
    item = pacs.series_a[0]
    out = tmp_path / "objects" / "new"
    with serving_api(port, env, tmp_path):
        args = ["infer", Ids.SEG_OBJECTS, item.study_uid, item.series_uid]
        args += ["--no-cache", "--output", str(tmp_path / "result.json"), "--dicom-out", str(out)]
        fresh = run_cli(*args, cwd=tmp_path, env=env)
        assert fresh.returncode == 0, fresh.stderr
        job_id = fresh.stderr.split("job ", 1)[1].split()[0]
        outputs = requests.get(f"http://127.0.0.1:{port}/jobs/{job_id}", timeout=10).json()
        written = {path.name: path for path in out.iterdir()}
        for path in written.values():
            path.unlink()
        # from the cache: the answer names the job that made it, whose objects are written
        cached = run_cli(*[a for a in args if a != "--no-cache"], cwd=tmp_path, env=env)

    expected = {output["sopInstanceUID"] for output in outputs["outputs"]}
    assert len(expected) == 1
    assert set(written) == {f"{uid}.dcm" for uid in expected}
    assert f"wrote {out}" in fresh.stderr
    assert cached.returncode == 0, cached.stderr
    assert "answered from the cache" in cached.stderr
    assert {path.name for path in out.iterdir()} == set(written)  # written again
    for name in written:
        ds = pydicom.dcmread(out / name)
        assert f"{ds.SOPInstanceUID}.dcm" == name
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
        assert ds.StudyInstanceUID == item.study_uid
