"""The fingerprint under which requests share a job and a stored answer: what the worker will
fetch and the model's and server's effective settings, nothing else."""

from __future__ import annotations

import json
from typing import Any

from model_proxy.broker.validation import ViewerPath, build_request
from model_proxy.shared.config import Catalog, ModelConfig, ServerConfig, Task

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
PLAIN = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
STUDY_FILTERS = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
SERIES_FILTERS = "8b2f3c4d-5e6f-4071-9b8c-0d1e2f3a4b5c"
STUDY = "1.2.840.113619.2.55.3"
SERIES = "1.2.840.113619.2.55.3.1"
OTHER_SERIES = "1.2.840.113619.2.55.3.2"
INSTANCE = "1.2.840.113619.2.55.3.1.1"
PASSWORD = "s3cret-Pacs-Password"


def _catalog(server: dict[str, Any] | None = None, **models: dict[str, Any]) -> Catalog:
    base = {"uri": "http://model/predict", "task": "segmentation"}
    configs = {
        PLAIN: {**base, "supports": ["/studies", "/studies/series", "/studies/series/instances"]},
        STUDY_FILTERS: {
            **base,
            "supports": ["/studies"],
            "dataFilter": [{"dataKey": "t1", "title": "T1"}, {"dataKey": "t2"}],
        },
        SERIES_FILTERS: {
            **base,
            "supports": ["/studies/series"],
            "dataFilter": [{"dataKey": "first"}],
        },
    }
    for key, extra in models.items():
        configs[{"plain": PLAIN, "study": STUDY_FILTERS}[key]].update(extra)
    pacs = {
        "uri": "http://pacs/dicom-web",
        "authType": "basicAuth",
        "login": "viewer",
        "password": PASSWORD,
        **(server or {}),
    }
    return Catalog(
        servers={SERVER: ServerConfig.model_validate(pacs)},
        models={key: ModelConfig.model_validate(value) for key, value in configs.items()},
        default_server_id=SERVER,
    )


def _fingerprint(catalog: Catalog, path: ViewerPath, *filters: Any) -> str:
    query = [("data-filters", json.dumps(item)) for item in filters]
    return build_request(catalog, Task.SEGMENTATION, path, query).fingerprint()


T1 = {"dataKey": "t1", "uuid": SERIES}
T2 = {"dataKey": "t2", "uuid": OTHER_SERIES}


def test_undeclared_data_filters_do_not_change_the_fingerprint() -> None:
    catalog = _catalog()
    path = ViewerPath(STUDY_FILTERS, STUDY)
    plain = _fingerprint(catalog, path, T1, T2)

    assert _fingerprint(catalog, path, T1, T2, {"dataKey": "junk", "uuid": "1.2.3.4"}) == plain
    assert _fingerprint(catalog, path, {"dataKey": "x", "uuid": "9.8.7"}, T2, T1) == plain
    nested_junk = {**T2, "dataFilter": [{"dataKey": "slice", "uuid": "1.2.3"}]}
    assert _fingerprint(catalog, path, T1, nested_junk) == plain
    assert _fingerprint(catalog, path, T1, {**T2, "uuid": SERIES}) != plain


def test_filters_a_level_ignores_do_not_change_the_fingerprint() -> None:
    catalog = _catalog()
    study = ViewerPath(PLAIN, STUDY)
    assert _fingerprint(catalog, study, {"dataKey": "a", "uuid": "1.2.3.99"}) == _fingerprint(
        catalog, study
    )
    series = ViewerPath(SERIES_FILTERS, STUDY, SERIES)
    first = {"dataKey": "first", "uuid": INSTANCE}
    assert _fingerprint(catalog, series, first, {"dataKey": "b", "uuid": "1.9"}) == (
        _fingerprint(catalog, series, first)
    )


def test_what_is_fetched_still_tells_requests_apart() -> None:
    catalog = _catalog()
    prints = {
        _fingerprint(catalog, ViewerPath(PLAIN, STUDY)),
        _fingerprint(catalog, ViewerPath(PLAIN, STUDY, SERIES)),
        _fingerprint(catalog, ViewerPath(PLAIN, STUDY, OTHER_SERIES)),
        _fingerprint(catalog, ViewerPath(PLAIN, STUDY, SERIES, INSTANCE)),
        _fingerprint(catalog, ViewerPath(STUDY_FILTERS, STUDY), T1, T2),
    }
    assert len(prints) == 5


def test_a_changed_server_or_model_setting_changes_the_fingerprint() -> None:
    path = ViewerPath(PLAIN, STUDY, SERIES)
    before = _fingerprint(_catalog(), path)
    changed = [
        _catalog(server={"uri": "http://pacs-2/dicom-web"}),
        _catalog(server={"password": "another-password"}),
        _catalog(server={"login": "someone-else"}),
        _catalog(server={"tlsVerify": False}),
        _catalog(plain={"uri": "http://model-2/predict"}),
    ]
    prints = [_fingerprint(catalog, path) for catalog in changed]
    assert before not in prints
    assert len(set(prints)) == len(prints)


def test_scheduling_settings_keep_the_fingerprint() -> None:
    path = ViewerPath(PLAIN, STUDY, SERIES)
    before = _fingerprint(_catalog(), path)
    same = [
        _catalog(server={"statusUri": "http://pacs/status", "isDefault": True}),
        _catalog(plain={"queue": "slow", "maxQueued": 3, "maxConcurrency": 1, "timeLimit": 9}),
        _catalog(plain={"statusUri": "http://model/health"}),
    ]
    assert {_fingerprint(catalog, path) for catalog in same} == {before}


def test_no_secret_is_kept_in_clear_in_the_request() -> None:
    request = build_request(_catalog(), Task.SEGMENTATION, ViewerPath(PLAIN, STUDY, SERIES))
    record = request.model_dump_json()
    assert request.sharing_key is not None
    assert PASSWORD not in record
    assert "viewer" not in record
