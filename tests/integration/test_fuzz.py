"""Property-based fuzzing of every route of the served OpenAPI document (schemathesis).

The API runs as a real HTTP server in front of the real Redis, worker, Orthanc and example
model. Schemathesis generates valid and invalid requests for every operation of the document the
API serves; half of the viewer requests are aimed at configured models, the real study and no
server parameter, so generated ``data-filters`` reach the parser and real jobs run. Asserted for
every response: no 5xx but the documented 502/503/504 of upstream faults, and the status, content
type, headers and body conform to the document. After the run a normal request still succeeds.

The API refuses anonymous requests and every case carries a valid admin key (whatever
credential schemathesis drew from the security schemes is replaced), so that the requests reach
the routes instead of all being answered 401; the run asserts that none was.

A short run is part of the suite; ``MODEL_PROXY_FUZZ_EXAMPLES=<n>`` (examples per operation and
mode) runs a longer one.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.processes import ManagedProcess, wait_until
from model_proxy.broker.app import create_app
from model_proxy.shared.api_keys import ApiKeyFile
from tests.support.deployment import Deployment, Ids, PacsData
from tests.support.served import serve

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("MODEL_PROXY_FUZZ_EXAMPLES", "12"))
UPSTREAM_FAULTS = {502, 503, 504}
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AIMED_MODELS = [
    Ids.SEGMENTATION,
    Ids.STUDY_FILTERS,
    Ids.SERIES_FILTERS,
    Ids.NESTED_FILTERS,
    Ids.FAILING,
]


@dataclass(frozen=True)
class ServedApi:
    url: str
    headers: dict[str, str]  # the credential of an admin key


@pytest.fixture(scope="module")
def served_api(
    deployment: Deployment, worker: ManagedProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedApi]:
    """The API as a real HTTP server that refuses anonymous requests, and an admin key for it;
    viewer requests wait at most a moment for their job."""
    keys_file = tmp_path_factory.mktemp("fuzz-keys") / "api-keys.json"
    _, key = ApiKeyFile(keys_file).add("fuzzer", "admin")
    settings = deployment.settings.model_copy(
        update={"sync_wait_seconds": 0.5, "anonymous": "none", "api_keys_file": keys_file}
    )
    with serve(create_app(settings, environ=deployment.environ), "fuzzed-api") as url:
        yield ServedApi(url, {"Authorization": f"Bearer {key}"})


def _aim(pacs: PacsData) -> Callable[[tuple[Case, bool, str]], Case]:
    """Point a viewer case at a configured model and the real study (when ``aimed``)."""

    def aim(drawn: tuple[Case, bool, str]) -> Case:
        case, aimed, model = drawn
        params = case.path_parameters
        if aimed and params and "model" in params:
            series = pacs.series_a[0]
            params["model"] = model
            params["study"] = series.study_uid
            if "series" in params:
                params["series"] = series.series_uid
            if "instance" in params:
                params["instance"] = series.sop_uid
            if case.query:
                case.query.pop("server", None)
        return case

    return aim


def _refused_by_the_http_server(response: requests.Response) -> bool:
    """uvicorn's own 400 for a request it cannot parse (e.g. a request line of 100 kB of
    generated filters): answered before the app, so outside the app's document."""
    return response.status_code == 400 and response.text == "Invalid HTTP request received."


def test_every_route_survives_fuzzing(
    served_api: ServedApi, pacs: PacsData, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{served_api.url}/openapi.json")
    session = requests.Session()
    made = 0
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15  # nine viewer routes, the job routes, the probes

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = st.tuples(
                operation.as_strategy(generation_mode=mode),
                st.booleans(),
                st.sampled_from(AIMED_MODELS),
            ).map(_aim(pacs))

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases)
            def fuzz(case: Case) -> None:
                nonlocal made
                headers = {
                    name: value
                    for name, value in (case.headers or {}).items()
                    if name.lower() not in ("authorization", "x-api-key")
                }
                case.headers = {**headers, **served_api.headers}
                response = case.call(base_url=served_api.url, session=session, timeout=30)
                made += 1
                statuses[response.status_code] += 1
                where = f"{case.method} {case.formatted_path} -> {response.status_code}"
                if response.status_code >= 500 and response.status_code not in UPSTREAM_FAULTS:
                    failures.append(f"{where}: {response.text[:200]}")
                    return
                if _refused_by_the_http_server(response):
                    return
                try:
                    case.validate_response(response, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as error:  # collect all, report them all
                    failures.append(f"{where}: {str(error)[:400]}")

            try:
                fuzz()
            except Unsatisfiable:
                # nothing of this operation can be made invalid (no parameters, or only a string)
                assert mode is GenerationMode.NEGATIVE

    with capsys.disabled():
        print(f"\nfuzzing: {made} requests over {len(operations)} operations")
    assert made > 0
    assert statuses[401] == 0 and statuses[200] > 0, statuses  # the routes were reached
    assert failures == [], "\n".join(failures[:20])


def test_the_worker_is_healthy_after_fuzzing(served_api: ServedApi, pacs: PacsData) -> None:
    series = pacs.series_a[0]
    response = requests.get(
        f"{served_api.url}/segmentations/{Ids.SEGMENTATION}/studies/{series.study_uid}"
        f"/series/{series.series_uid}",
        headers={"Cache-Control": "no-cache", "Prefer": "respond-async", **served_api.headers},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_url = f"{served_api.url}{response.headers['location']}"

    def state() -> Any:
        return requests.get(job_url, headers=served_api.headers, timeout=5).json()["state"]

    wait_until(lambda: state() in ("succeeded", "failed"), 60, "the job after fuzzing")
    assert state() == "succeeded"


HOSTILE_FILTERS = {
    "deep-json": "[" * 5000 + "]" * 5000,
    "deep-objects": '{"dataKey": "a", "uuid": "1.2", "dataFilter": ' * 300 + "[]" + "}" * 300,
    "long-number": '{"dataKey": "series-one", "uuid": ' + "9" * 5000 + "}",
    "lone-surrogate-key": '{"dataKey": "\\ud800", "uuid": "1.2.3"}',
    "lone-surrogate-uid": '{"dataKey": "series-one", "uuid": "1.2\\udc00"}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILTERS))
@pytest.mark.parametrize("form", ["data-filters", "data-filters[]", "data-filters[0][dataKey]"])
@pytest.mark.parametrize("model", [Ids.STUDY_FILTERS, Ids.SEGMENTATION])
def test_hostile_data_filters_are_a_400_on_every_route_form(
    served_api: ServedApi, pacs: PacsData, name: str, form: str, model: str
) -> None:
    """What a hand-written fuzzer found (deep nesting, a 5,000-digit number, a lone surrogate),
    through the route: a clear error or an answer, never a 500; undeclared junk is ignored."""
    response = requests.get(
        f"{served_api.url}/segmentations/{model}/studies/{pacs.study_uid}",
        params={form: HOSTILE_FILTERS[name], "async": "true"},
        headers=served_api.headers,
        timeout=30,
    )
    assert response.status_code in (202, 400, 422), response.text
    if response.status_code != 202:
        assert response.json()["code"] in ("invalid_data_filter", "invalid_uid")
