"""The OpenAPI document describes every route and the answers a client can get."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    here: Path = tmp_path_factory.mktemp("openapi")
    (here / "servers.json").write_text(json.dumps({SERVER: {"uri": "http://pacs/dicom-web"}}))
    (here / "models.json").write_text(
        json.dumps(
            {
                MODEL: {
                    "uri": "http://model/predict",
                    "task": "segmentation",
                    "supports": ["/studies"],
                }
            }
        )
    )
    settings = Settings(servers_file=here / "servers.json", models_file=here / "models.json")
    app = create_app(settings, redis_url="redis://127.0.0.1:1/0", environ={})
    schema: dict[str, Any] = app.openapi()
    return schema


def viewer_paths() -> list[str]:
    paths = []
    for prefix in ("segmentations", "annotations", "predictions"):
        base = f"/{prefix}/{{model}}/studies/{{study}}"
        paths += [
            base,
            f"{base}/series/{{series}}",
            f"{base}/series/{{series}}/instances/{{instance}}",
        ]
    return paths


@pytest.mark.parametrize("path", viewer_paths())
def test_each_viewer_route_documents_every_answer(document: dict[str, Any], path: str) -> None:
    operation = document["paths"][path]["get"]
    assert set(operation["responses"]) >= {
        "200",
        "202",
        "400",
        "404",
        "410",
        "422",
        "429",
        "502",
        "503",
        "504",
    }
    parameters = {p["name"] for p in operation["parameters"]}
    assert {"model", "study", "server"} <= parameters


def test_the_job_routes_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert set(paths["/jobs/{job_id}"]) == {"get", "delete"}
    assert {"200", "404"} <= set(paths["/jobs/{job_id}"]["get"]["responses"])
    assert {"200", "404", "409"} <= set(paths["/jobs/{job_id}"]["delete"]["responses"])
    assert {"200", "202", "404", "410", "502"} <= set(
        paths["/jobs/{job_id}/result"]["get"]["responses"]
    )
    assert {p["name"] for p in paths["/jobs"]["get"]["parameters"]} == {"state", "limit"}
    job = document["components"]["schemas"]["JobResource"]
    assert {"id", "state", "request", "progress", "createdAt", "error", "links"} <= set(
        job["properties"]
    )


def test_every_route_of_the_app_is_in_the_document(document: dict[str, Any]) -> None:
    documented = set(document["paths"])
    assert documented >= {
        *viewer_paths(),
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/result",
        "/healthz",
        "/readyz",
    }


@pytest.mark.parametrize("path", viewer_paths())
def test_each_viewer_route_documents_what_it_reads(document: dict[str, Any], path: str) -> None:
    parameters = {(p["in"], p["name"]): p for p in document["paths"][path]["get"]["parameters"]}
    assert {("query", "async"), ("header", "prefer"), ("header", "cache-control")} <= set(
        parameters
    )
    filters = parameters.get(("query", "data-filters"))
    if path.endswith("{instance}"):
        assert filters is None  # not read at instance level
    else:
        assert filters is not None
        schema = filters["content"]["application/json"]["schema"]
        assert {"dataKey", "uuid"} <= set(schema["anyOf"][1]["properties"])
    responses = document["paths"][path]["get"]["responses"]
    assert "Retry-After" in responses["503"]["headers"]
    assert responses["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_readiness_and_the_job_routes_document_their_503(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert {"200", "503"} <= set(paths["/readyz"]["get"]["responses"])
    for path, method in [
        ("/jobs", "get"),
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs/{job_id}/result", "get"),
        ("/metrics", "get"),
    ]:
        assert "503" in paths[path][method]["responses"], path
    assert paths["/jobs"]["get"]["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def _document(folder: Path, **values: Any) -> dict[str, Any]:
    (folder / "servers.json").write_text(json.dumps({SERVER: {"uri": "http://pacs/dicom-web"}}))
    (folder / "models.json").write_text(
        json.dumps({MODEL: {"uri": "http://m/p", "task": "segmentation", "supports": ["/studies"]}})
    )
    settings = Settings(
        servers_file=folder / "servers.json", models_file=folder / "models.json", **values
    )
    schema: dict[str, Any] = create_app(settings, redis_url="redis://127.0.0.1:1/0").openapi()
    return schema


GUARDED = [(path, "get") for path in viewer_paths()] + [
    ("/jobs", "get"),
    ("/jobs/{job_id}", "get"),
    ("/jobs/{job_id}", "delete"),
    ("/jobs/{job_id}/result", "get"),
]


def test_the_security_schemes_are_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert "oidc" not in schemes  # no issuer configured


@pytest.mark.parametrize(("path", "method"), GUARDED)
def test_the_inference_and_job_routes_name_the_schemes_and_their_refusals(
    document: dict[str, Any], path: str, method: str
) -> None:
    operation = document["paths"][path][method]
    # anonymous access is the viewer's way here: the empty requirement documents it
    assert operation["security"] == [{"bearer": []}, {"apiKey": []}, {}]
    unauthorised = operation["responses"]["401"]
    assert "invalid_credentials" in unauthorised["description"]
    assert "WWW-Authenticate" in unauthorised["headers"]
    assert unauthorised["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    assert "insufficient_scope" in operation["responses"]["403"]["description"]


def test_the_probes_need_no_credential(document: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz"):
        assert "security" not in document["paths"][path]["get"]


def test_an_issuer_adds_the_openid_connect_scheme(tmp_path: Path) -> None:
    issuer = "https://idp.example/realms/hospital"
    document = _document(tmp_path, jwt_issuer=issuer, jwt_audience="model-proxy", anonymous="none")
    assert document["components"]["securitySchemes"]["oidc"] == {
        "type": "openIdConnect",
        "openIdConnectUrl": f"{issuer}/.well-known/openid-configuration",
    }
    for path, method in GUARDED:
        assert document["paths"][path][method]["security"] == [
            {"bearer": []},
            {"apiKey": []},
            {"oidc": ["read:model"]},
        ]  # no empty requirement: anonymous requests are refused


def test_the_job_resource_describes_its_queue_place_and_estimates(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    properties = schemas["JobResource"]["properties"]

    for name in ("queue", "estimatedStartAt", "estimatedFinishAt"):
        assert "estimate" in properties[name]["description"] or name == "queue"
        assert properties[name]["description"]
    assert set(schemas["QueuePlaceView"]["properties"]) == {"position", "ahead", "concurrency"}


def test_post_jobs_describes_its_body_answers_and_headers(document: dict[str, Any]) -> None:
    operation = document["paths"]["/jobs"]["post"]

    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"task", "model", "study"}
    assert body["additionalProperties"] is False
    assert {"server", "series", "instance", "dataFilters", "fresh"} <= set(body["properties"])
    answers = operation["responses"]
    assert {"200", "202", "400", "404", "409", "413", "415", "422", "429"} <= set(answers)
    assert "Preference-Applied" in answers["200"]["headers"]
    assert "Location" in answers["202"]["headers"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"prefer", "idempotency-key"}


@pytest.mark.parametrize("path", viewer_paths())
def test_each_viewer_route_documents_its_callback(document: dict[str, Any], path: str) -> None:
    operation = document["paths"][path]["get"]
    parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
    callback = parameters[("query", "callback")]
    assert "MODEL_PROXY_CALLBACK_ORIGINS" in callback["description"]
    assert "callback_not_allowed" in operation["responses"]["422"]["description"]


def test_the_job_resource_documents_its_callbacks(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "callbacks" in schemas["JobResource"]["properties"]
    assert {"url", "attempts", "delivered", "failed"} <= set(schemas["CallbackView"]["properties"])
    assert {"at", "status", "error"} <= set(schemas["CallbackAttemptView"]["properties"])
    url = schemas["CallbackView"]["properties"]["url"]["description"]
    assert "only its origin" in url and "anonymous" in url
