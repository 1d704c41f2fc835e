"""Which web pages may call the API (broker/origins.py): patterns, and the app's answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from model_proxy.broker.app import create_app
from model_proxy.broker.origins import OriginPolicy
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.settings import Settings

DEFAULT = OriginPolicy.from_patterns(Settings().cors_origins)
SERVERS = '{"5f0e0f0e-0000-4000-8000-000000000001": {"uri": "http://127.0.0.1:1/dicom-web"}}'
MODELS = (
    '{"5f0e0f0e-0000-4000-8000-000000000002": {"uri": "http://127.0.0.1:1/infer",'
    ' "task": "segmentation", "supports": ["/studies/series"]}}'
)


def _settings(folder: Path, **values: object) -> Settings:
    (folder / "servers.json").write_text(SERVERS)
    (folder / "models.json").write_text(MODELS)
    return Settings(
        servers_file=folder / "servers.json", models_file=folder / "models.json", **values
    )


@pytest.mark.parametrize(
    "origin",
    [
        "https://alpha.zhiva.ai",
        "https://a.b.zhiva.org",
        "http://localhost:3000",
        "https://localhost",
        "http://127.0.0.1:8080",
        "http://[::1]:5173",
    ],
)
def test_the_default_allows_zhivas_sites_and_this_machine(origin: str) -> None:
    assert DEFAULT.allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://zhiva.ai",  # the bare domain is not a subdomain
        "http://alpha.zhiva.ai",  # not https
        "https://zhiva.ai.evil.example",
        "https://evilzhiva.ai",
        "http://localhost.evil.example",
        "http://localhost:3000.evil.example",
        "null",
    ],
)
def test_the_default_refuses_everything_else(origin: str) -> None:
    assert not DEFAULT.allows(origin)


def test_exact_origins_ports_and_any() -> None:
    policy = OriginPolicy.from_patterns(["https://viewer.hospital.example", "http://pacs:8042"])
    assert policy.allows("https://viewer.hospital.example")
    assert policy.allows("http://pacs:8042")
    assert not policy.allows("http://pacs:8043")
    assert not policy.allows("https://viewer.hospital.example.evil")
    assert OriginPolicy.from_patterns(["*"]).allows("https://anything.example")
    assert not OriginPolicy.from_patterns([]).allows("http://localhost")


@pytest.mark.parametrize(
    "pattern", ["viewer.example", "ftp://x.example", "https://*", "*.zhiva.ai"]
)
def test_a_bad_pattern_is_refused_at_start_naming_the_setting(pattern: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MODEL_PROXY_CORS_ORIGINS"):
        create_app(_settings(tmp_path, cors_origins=[pattern]), redis_url="redis://127.0.0.1:1/0")


@pytest.fixture
def api(tmp_path: Path) -> TestClient:
    return TestClient(create_app(_settings(tmp_path), redis_url="redis://127.0.0.1:1/0"))


def _preflight(api: TestClient, origin: str, method: str = "GET") -> dict[str, str]:
    answer = api.options(
        "/jobs/0123456789abcdef0123456789abcdef",
        headers={"Origin": origin, "Access-Control-Request-Method": method},
    )
    return dict(answer.headers)


def test_only_allowed_pages_get_cors_headers(api: TestClient) -> None:
    assert "access-control-allow-origin" not in _preflight(api, "https://evil.example")
    for origin in ("https://alpha.zhiva.ai", "http://localhost:3000"):
        assert _preflight(api, origin)["access-control-allow-origin"] == origin


def test_the_viewers_script_may_read_the_job_and_cache_headers(api: TestClient) -> None:
    answer = api.get("/healthz", headers={"Origin": "https://alpha.zhiva.ai"})
    exposed = {
        name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")
    }
    assert {"etag", "x-job-id", "location", "retry-after"} <= exposed


def test_a_state_change_from_a_disallowed_page_is_refused(api: TestClient) -> None:
    answer = api.delete(
        "/jobs/0123456789abcdef0123456789abcdef", headers={"Origin": "https://evil.example"}
    )
    assert answer.status_code == 403
    assert answer.json()["code"] == "origin_not_allowed"


VIEWER_GET = "/segmentations/5f0e0f0e-0000-4000-8000-000000000002/studies/1.2/series/1.2.3"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},  # a page's fetch()
        {"Origin": "null"},  # a sandboxed frame, a file
        {"Sec-Fetch-Site": "cross-site"},  # another site's <img src>: no Origin
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    ],
)
@pytest.mark.parametrize("path", [VIEWER_GET, "/jobs/0123456789abcdef0123456789abcdef", "/jobs"])
def test_a_get_from_another_sites_page_is_refused_before_it_makes_a_job(
    api: TestClient, headers: dict[str, str], path: str
) -> None:
    # the app has no Redis (its lifespan does not run): a request that got through would fail
    answer = api.get(path, headers=headers)
    assert answer.status_code == 403
    assert answer.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in answer.headers


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a program
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": "https://alpha.zhiva.ai", "Sec-Fetch-Site": "cross-site"},  # the viewer
    ],
)
def test_programs_this_sites_pages_and_the_viewer_pass(
    api: TestClient, headers: dict[str, str]
) -> None:
    assert api.get("/openapi.json", headers=headers).status_code == 200


def test_the_probes_and_the_api_description_answer_any_page(api: TestClient) -> None:
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        for path in ("/healthz", "/docs", "/openapi.json"):
            assert api.get(path, headers=headers).status_code == 200, (path, headers)
        assert api.get("/jobs", headers=headers).status_code == 403


def test_a_refused_page_is_refused_before_credentials_are_asked_for(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, anonymous="none"), redis_url="redis://127.0.0.1:1/0")
    api = TestClient(app)
    job = "/jobs/0123456789abcdef0123456789abcdef"
    refused = api.delete(job, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert refused.json()["code"] == "origin_not_allowed"
    assert "www-authenticate" not in refused.headers
    # an allowed page without a credential is asked for one, and can read that answer
    asked = api.delete(job, headers={"Origin": "https://alpha.zhiva.ai"})
    assert asked.status_code == 401
    assert asked.headers["access-control-allow-origin"] == "https://alpha.zhiva.ai"


def test_an_allowed_page_may_submit_jobs_and_read_the_wait_applied(api: TestClient) -> None:
    answer = api.options(
        "/jobs",
        headers={
            "Origin": "https://alpha.zhiva.ai",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key, prefer",
        },
    )
    assert answer.status_code == 200
    assert "POST" in answer.headers["access-control-allow-methods"]
    seen = api.get("/healthz", headers={"Origin": "https://alpha.zhiva.ai"})
    assert "preference-applied" in seen.headers["access-control-expose-headers"].lower()
