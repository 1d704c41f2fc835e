"""Loading servers.json and models.json: what a user sees when a file is right, and when not."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from model_proxy.shared.config import (
    AuthType,
    Catalog,
    Level,
    SizeLimits,
    Task,
    Transport,
    load_catalog,
)
from model_proxy.shared.errors import ConfigError, UnknownModel, UnknownServer
from model_proxy.shared.settings import Settings

PACS = "b5208f48-f748-4339-9402-d1148dab571e"
OTHER_PACS = "0c5c2d3e-5a55-4a4e-8f11-9a7b2f8c1d01"
THIRD_PACS = "1d6d3e4f-6b66-4b5f-9a22-ab8c3f9d2e02"
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
OTHER_MODEL = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
THIRD_MODEL = "8b2f3c4d-5e6f-4071-9b8c-0d1e2f3a4b5c"
PASSWORD = "Pa55-w0rd-that-must-never-show"

A_SERVER = {"uri": "https://pacs.example/dicom-web"}
A_MODEL = {"uri": "http://model:8011/predict", "task": "segmentation", "supports": ["/studies"]}

Load = Callable[..., Catalog]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "servers.json", tmp_path / "models.json"


@pytest.fixture
def load(files: tuple[Path, Path]) -> Load:
    """Write the two documents (a dict is dumped, a str written as it is) and load them."""
    servers_file, models_file = files

    def write_and_load(
        servers: dict[str, Any] | str | None = None,
        models: dict[str, Any] | str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Catalog:
        for path, document in (
            (servers_file, {PACS: A_SERVER} if servers is None else servers),
            (models_file, {MODEL: A_MODEL} if models is None else models),
        ):
            path.write_text(document if isinstance(document, str) else json.dumps(document))
        return load_catalog(servers_file, models_file, environ or {})

    return write_and_load


def config_error(load: Load, **documents: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**documents)
    assert caught.value.code == "invalid_config"
    return caught.value.message


# --- a good configuration -----------------------------------------------------------------------


def test_a_full_configuration(load: Load) -> None:
    catalog = load(
        servers={
            PACS.upper(): {
                "uri": "https://production_nginx:443/zhiva/pacs/",
                "isDefault": True,
                "statusUri": "https://production_nginx:443/zhiva/pacs/studies",
                "authType": "basicAuth",
                "login": "proxy",
                "password": PASSWORD,
            },
            OTHER_PACS: {"uri": "http://orthanc:8042/dicom-web", "authType": ""},
        },
        models={
            MODEL: {
                "uri": "http://lung_model_api:8011/segmentation",
                "task": "segmentation",
                "supports": ["/studies", "/studies/series"],
                "statusUri": "http://lung_model_api:8011/status",
                "dataFilter": [
                    {
                        "dataKey": "series-one",
                        "title": "Series one",
                        "description": "pre-contrast",
                        "dataFilter": [{"dataKey": "slice_1", "title": "Slice"}],
                    }
                ],
            }
        },
    )
    assert catalog.default_server_id == PACS
    server_id, server = catalog.server(None)
    assert server_id == PACS
    assert server.auth_type is AuthType.BASIC
    assert server.login == "proxy"
    assert server.password is not None
    assert server.password.get_secret_value() == PASSWORD
    assert server.dicomweb_root == "https://production_nginx:443/zhiva/pacs"
    model = catalog.model(MODEL.upper())
    assert model.task is Task.SEGMENTATION
    assert model.supports == (Level.STUDY, Level.SERIES)
    assert model.data_filter[0].data_key == "series-one"
    assert model.data_filter[0].description == "pre-contrast"
    assert model.data_filter[0].data_filter[0].data_key == "slice_1"


def test_lookups_are_case_insensitive_and_unknown_ids_are_not_found(load: Load) -> None:
    catalog = load(servers={PACS: A_SERVER, OTHER_PACS: A_SERVER})
    assert catalog.server(OTHER_PACS.upper())[0] == OTHER_PACS
    assert catalog.server("")[0] == PACS
    with pytest.raises(UnknownServer) as server_error:
        catalog.server(THIRD_PACS)
    assert server_error.value.message == f"Not found: no server '{THIRD_PACS}' in servers.json"
    with pytest.raises(UnknownModel) as model_error:
        catalog.model(THIRD_PACS)
    assert model_error.value.message == f"Not found: no model '{THIRD_PACS}' in models.json"


def test_no_models_is_allowed(load: Load) -> None:
    assert load(models={}).models == {}


# --- ${NAME} from the environment mapping -------------------------------------------------------


def test_variables_come_from_the_mapping_passed_in(
    load: Load, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACS_PASSWORD", "from-os-environ")
    catalog = load(
        servers={
            PACS: {
                "uri": "https://${PACS_HOST}:443/${PACS_PATH}",
                "authType": "basicAuth",
                "login": "${PACS_LOGIN}",
                "password": "${PACS_PASSWORD}",
            }
        },
        models={MODEL: {**A_MODEL, "dataFilter": [{"dataKey": "k", "title": "${TITLE}"}]}},
        environ={
            "PACS_HOST": "pacs.example",
            "PACS_PATH": "dicom-web",
            "PACS_LOGIN": "proxy",
            "PACS_PASSWORD": PASSWORD,
            "TITLE": "Pre-contrast",
        },
    )
    server = catalog.servers[PACS]
    assert server.uri == "https://pacs.example:443/dicom-web"
    assert server.login == "proxy"
    assert server.password is not None
    assert server.password.get_secret_value() == PASSWORD
    assert catalog.models[MODEL].data_filter[0].title == "Pre-contrast"


@pytest.mark.parametrize("text", ["$PACS_LOGIN", "${1ABC}", "${}", "$ {PACS_LOGIN}"])
def test_only_braced_names_are_substituted(load: Load, text: str) -> None:
    catalog = load(
        servers={PACS: {**A_SERVER, "authType": "basicAuth", "login": text, "password": "x"}},
        environ={"PACS_LOGIN": "proxy", "1ABC": "no"},
    )
    assert catalog.servers[PACS].login == text


def test_a_missing_variable_names_file_key_field_and_variable(
    load: Load, files: tuple[Path, Path]
) -> None:
    message = config_error(
        load,
        servers={
            PACS: {
                **A_SERVER,
                "authType": "basicAuth",
                "login": "proxy",
                "password": "${PACS_PASSWORD}",
            }
        },
        environ={"PACS_LOGIN": "proxy"},
    )
    assert message == (
        f'{files[0]}: server "{PACS}": field "password": '
        "environment variable PACS_PASSWORD is not set"
    )


def test_a_missing_variable_in_a_nested_field(load: Load, files: tuple[Path, Path]) -> None:
    models = {MODEL: {**A_MODEL, "dataFilter": [{"dataKey": "k", "title": "${NO_SUCH}"}]}}
    message = config_error(load, models=models)
    assert message == (
        f'{files[1]}: model "{MODEL}": field "dataFilter[0].title": '
        "environment variable NO_SUCH is not set"
    )


# --- token is authToken -------------------------------------------------------------------------

TOKEN_SERVER = {
    "uri": "https://localhost/zhiva/pacs",
    "authType": "token",
    "signInTokenServer": "https://localhost/auth/generate-access-token",
    "refreshServer": "https://localhost/auth/refresh-token",
}


def test_token_is_accepted_as_auth_token(load: Load) -> None:
    catalog = load(servers={PACS: {**TOKEN_SERVER, "token": "one-off-token"}})
    token = catalog.servers[PACS].auth_token
    assert token is not None
    assert token.get_secret_value() == "one-off-token"


def test_auth_token_wins_over_token(load: Load) -> None:
    catalog = load(servers={PACS: {**TOKEN_SERVER, "token": "old", "authToken": "new"}})
    token = catalog.servers[PACS].auth_token
    assert token is not None
    assert token.get_secret_value() == "new"


# --- the default server -------------------------------------------------------------------------


def test_no_default_means_the_first_in_the_file(load: Load) -> None:
    catalog = load(servers={OTHER_PACS: A_SERVER, PACS: A_SERVER, THIRD_PACS: A_SERVER})
    assert catalog.default_server_id == OTHER_PACS


def test_the_one_default(load: Load) -> None:
    catalog = load(
        servers={
            PACS: A_SERVER,
            OTHER_PACS: {**A_SERVER, "isDefault": True},
            THIRD_PACS: {**A_SERVER, "isDefault": False},
        }
    )
    assert catalog.default_server_id == OTHER_PACS
    assert catalog.server(None) == (OTHER_PACS, catalog.servers[OTHER_PACS])


def test_two_defaults_are_an_error_naming_both(load: Load, files: tuple[Path, Path]) -> None:
    message = config_error(
        load,
        servers={
            PACS: {**A_SERVER, "isDefault": True},
            OTHER_PACS: A_SERVER,
            THIRD_PACS: {**A_SERVER, "isDefault": True},
        },
    )
    assert message == (
        f"{files[0]}: more than one server has isDefault true ({PACS}, {THIRD_PACS}); "
        "mark exactly one"
    )


def test_no_servers_is_an_error(load: Load, files: tuple[Path, Path]) -> None:
    message = config_error(load, servers={})
    assert message == f"{files[0]}: no servers defined; add at least one DICOMweb server"


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["my-pacs", "", "12345", PACS[:-1], PACS + "0"])
def test_a_server_key_must_be_a_uuid(load: Load, files: tuple[Path, Path], key: str) -> None:
    message = config_error(load, servers={key: A_SERVER})
    assert message == f'{files[0]}: server "{key}": the key must be a UUID'


def test_a_model_key_must_be_a_uuid(load: Load, files: tuple[Path, Path]) -> None:
    message = config_error(load, models={"lung-model": A_MODEL})
    assert message == f'{files[1]}: model "lung-model": the key must be a UUID'


def test_a_key_defined_twice_in_another_case(load: Load, files: tuple[Path, Path]) -> None:
    message = config_error(load, servers={PACS: A_SERVER, PACS.upper(): A_SERVER})
    assert message == f'{files[0]}: server "{PACS.upper()}": defined twice'


def test_a_key_defined_twice_verbatim(load: Load, files: tuple[Path, Path]) -> None:
    """A copied entry whose key was not changed must not silently replace the first one."""
    first = json.dumps({"uri": "https://first.example/dicom-web", "isDefault": True})
    second = json.dumps({"uri": "https://second.example/dicom-web"})
    message = config_error(load, servers=f'{{"{PACS}": {first},\n "{PACS}": {second}}}')
    assert message == f'{files[0]}: the key "{PACS}" appears twice in one object'


# --- the file itself ----------------------------------------------------------------------------


def test_bad_json_names_line_and_column(load: Load, files: tuple[Path, Path]) -> None:
    text = f'{{\n  "{PACS}": {{\n    "uri": "https://pacs.example"\n    "isDefault": true\n  }}\n}}'
    message = config_error(load, servers=text)
    assert message == f"{files[0]}: not valid JSON at line 4 column 5: Expecting ',' delimiter"


def test_an_empty_file(load: Load, files: tuple[Path, Path]) -> None:
    message = config_error(load, models="")
    assert message == f"{files[1]}: not valid JSON at line 1 column 1: Expecting value"


def test_a_missing_file(files: tuple[Path, Path]) -> None:
    servers_file, models_file = files
    models_file.write_text("{}")
    with pytest.raises(ConfigError) as caught:
        load_catalog(servers_file, models_file, {})
    assert caught.value.message == f"{servers_file}: file not found"


@pytest.mark.parametrize("document", ["[]", '"servers"', "null", "1"])
def test_the_document_must_be_an_object(
    load: Load, files: tuple[Path, Path], document: str
) -> None:
    message = config_error(load, servers=document)
    assert message == f"{files[0]}: must be a JSON object keyed by server UUIDs"


def test_an_entry_must_be_an_object(load: Load, files: tuple[Path, Path]) -> None:
    message = config_error(load, models={MODEL: ["http://model"]})
    assert message == f'{files[1]}: model "{MODEL}": must be a JSON object'


# --- fields -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "entry", "problem"),
    [
        ("server", {**A_SERVER, "pasword": "x"}, 'field "pasword": Extra inputs are not permitted'),
        ("server", {"isDefault": True}, 'field "uri": Field required'),
        (
            "server",
            {"uri": "pacs.example/dicom-web"},
            "field \"uri\": String should match pattern '^https?://'",
        ),
        (
            "server",
            {**A_SERVER, "authType": "oauth"},
            "field \"authType\": Input should be '', 'basicAuth', 'token' or 'zhivaAuth'",
        ),
        (
            "server",
            {**A_SERVER, "authType": "basicAuth", "login": "proxy"},
            "Value error, authType 'basicAuth' needs password",
        ),
        (
            "server",
            {**A_SERVER, "authType": "token"},
            "Value error, authType 'token' needs authToken, signInTokenServer",
        ),
        (
            "model",
            {**A_MODEL, "nickname": "Lung"},
            'field "nickname": Extra inputs are not permitted',
        ),
        (
            "model",
            {**A_MODEL, "task": "classification"},
            "field \"task\": Input should be 'segmentation', 'annotation' or 'prediction'",
        ),
        (
            "model",
            {**A_MODEL, "supports": ["/studies", "/series"]},
            "field \"supports.1\": Input should be '/studies', '/studies/series' or "
            "'/studies/series/instances'",
        ),
        (
            "model",
            {**A_MODEL, "supports": []},
            'field "supports": Tuple should have at least 1 item after validation, not 0',
        ),
        (
            "model",
            {**A_MODEL, "maxInstanceBytes": 0},
            'field "maxInstanceBytes": Input should be greater than 0',
        ),
        (
            "model",
            {**A_MODEL, "maxInputBytes": "a lot"},
            'field "maxInputBytes": Input should be a valid integer, unable to parse string as '
            "an integer",
        ),
        (
            "model",
            {**A_MODEL, "maxAnswerBytes": 1.5},
            'field "maxAnswerBytes": Input should be a valid integer, got a number with a '
            "fractional part",
        ),
        (
            "model",
            {**A_MODEL, "transport": "dicom"},
            "field \"transport\": Input should be 'json' or 'multipart'",
        ),
        (
            "model",
            {**A_MODEL, "tlsVerify": "sometimes"},
            'field "tlsVerify": Input should be a valid boolean, unable to interpret input',
        ),
        (
            "model",
            {**A_MODEL, "caBundle": "/nowhere/model-ca.crt"},
            "Value error, caBundle '/nowhere/model-ca.crt' is not a readable file",
        ),
        (
            "model",
            {**A_MODEL, "dataFilter": [{"dataKey": "a key", "title": "x"}]},
            "field \"dataFilter.0.dataKey\": String should match pattern '^[A-Za-z0-9_-]+$'",
        ),
        (
            "model",
            {**A_MODEL, "dataFilter": [{"dataKey": "k", "dataFilter": [{"title": "x"}]}]},
            'field "dataFilter.0.dataFilter.0.dataKey": Field required',
        ),
    ],
)
def test_a_bad_field_is_named(
    load: Load, files: tuple[Path, Path], kind: str, entry: dict[str, Any], problem: str
) -> None:
    if kind == "server":
        message = config_error(load, servers={PACS: entry})
        assert message == f'{files[0]}: server "{PACS}": {problem}'
    else:
        message = config_error(load, models={MODEL: entry})
        assert message == f'{files[1]}: model "{MODEL}": {problem}'


# --- secrets ------------------------------------------------------------------------------------

BASIC = {"uri": "https://pacs.example", "authType": "basicAuth", "login": "proxy"}


@pytest.mark.parametrize(
    "servers",
    [
        {PACS: {**BASIC, "password": PASSWORD, "uri": "ftp://pacs"}},
        {PACS: {**BASIC, "password": PASSWORD, "passwd": PASSWORD}},
        {PACS: {**BASIC, "password": [PASSWORD]}},
        {PACS: {**BASIC, "password": {"value": PASSWORD}}},
        {PACS: {**BASIC, "password": PASSWORD, "login": None, "isDefault": PASSWORD}},
        {PACS: {**BASIC, "password": PASSWORD, "authType": PASSWORD}},
        {PACS: {**BASIC, "authToken": PASSWORD, "authType": "zhivaAuth"}},
        {PACS: {**BASIC, "password": "${UNSET}" + PASSWORD}},
        {
            PACS: {**BASIC, "password": PASSWORD},
            OTHER_PACS: {**BASIC, "password": PASSWORD, "refreshServer": PASSWORD},
        },
        f'{{"{PACS}": {{"uri": "https://pacs", "password": "{PASSWORD}" "login": "x"}}}}',
        f'{{"{PACS}": {{"uri": "https://pacs", "password": "{PASSWORD}\n"}}}}',
    ],
    ids=lambda doc: str(doc)[40:90] if isinstance(doc, str) else None,
)
def test_no_password_in_any_error_message(load: Load, servers: dict[str, Any] | str) -> None:
    message = config_error(load, servers=servers)
    assert PASSWORD not in message
    assert PASSWORD[:8] not in message


def test_no_secret_in_the_repr_of_the_catalog(load: Load) -> None:
    catalog = load(
        servers={
            PACS: {**BASIC, "password": PASSWORD},
            OTHER_PACS: {**TOKEN_SERVER, "authToken": PASSWORD},
        }
    )
    assert PASSWORD not in repr(catalog)
    assert PASSWORD not in str(catalog.servers)


def test_a_doubled_dollar_keeps_a_literal_reference(load: Load) -> None:
    """``$${NAME}`` is written as ``${NAME}``, for a password that contains such text."""
    server = {**A_SERVER, "authType": "basicAuth", "login": "u", "password": "a$${NOT_A_VAR}b"}
    catalog = load(servers={PACS: server}, environ={"NOT_A_VAR": "replaced"})
    password = catalog.servers[PACS].password
    assert password is not None
    assert password.get_secret_value() == "a${NOT_A_VAR}b"


# --- a model's size caps and TLS settings -------------------------------------------------------


def test_a_models_transport_is_json_unless_it_asks_for_multipart(load: Load) -> None:
    catalog = load(models={MODEL: A_MODEL, OTHER_MODEL: {**A_MODEL, "transport": "multipart"}})
    assert catalog.model(MODEL).transport is Transport.JSON
    assert catalog.model(OTHER_MODEL).transport is Transport.MULTIPART


def test_a_models_size_caps_override_the_settings(load: Load) -> None:
    caps = {"maxInstanceBytes": 1000, "maxInputBytes": 5000, "maxAnswerBytes": 2000}
    catalog = load(models={MODEL: {**A_MODEL, **caps}, OTHER_MODEL: A_MODEL})
    defaults = SizeLimits(instance=1, input=2, answer=3)
    assert defaults.for_model(catalog.model(MODEL)) == SizeLimits(1000, 5000, 2000)
    assert defaults.for_model(catalog.model(OTHER_MODEL)) == defaults
    partial = load(models={MODEL: {**A_MODEL, "maxAnswerBytes": 7}})
    assert defaults.for_model(partial.model(MODEL)) == SizeLimits(1, 2, 7)


def test_the_size_caps_default_to_the_settings() -> None:
    limits = SizeLimits.from_settings(
        Settings(max_instance_bytes=10, max_input_bytes=20, max_answer_bytes=30)
    )
    assert limits == SizeLimits(instance=10, input=20, answer=30)
    assert SizeLimits.from_settings(Settings()) == SizeLimits(256 * 2**20, 2 * 2**30, 256 * 2**20)


def test_a_models_tls_settings(load: Load, tmp_path: Path) -> None:
    ca = tmp_path / "model-ca.crt"
    ca.write_text("not parsed at load")
    catalog = load(
        models={
            MODEL: {**A_MODEL, "caBundle": str(ca)},
            OTHER_MODEL: {**A_MODEL, "tlsVerify": False},
            THIRD_MODEL: A_MODEL,
        }
    )
    assert catalog.model(MODEL).tls_verification == str(ca)
    assert catalog.model(OTHER_MODEL).tls_verification is False
    assert catalog.model(THIRD_MODEL).tls_verification is True


def test_store_names_the_objects_and_defaults_to_the_request_server(load: Load) -> None:
    catalog = load(models={MODEL: {**A_MODEL, "store": {"objects": ["seg", "sr"]}}})
    store = catalog.model(MODEL).store
    assert store is not None
    assert [kind.value for kind in store.objects] == ["seg", "sr"]
    assert store.server is None


@pytest.mark.parametrize(
    ("store", "task", "expected"),
    [
        ({"objects": ["seg"]}, "annotation", 'a "seg" object needs task "segmentation"'),
        ({"objects": []}, "segmentation", "objects"),
        ({"objects": ["rtstruct"]}, "segmentation", "objects"),
        ({"objects": ["sr", "sr"]}, "prediction", "names an object twice"),
        ({"objects": ["sr"], "server": OTHER_PACS}, "prediction", '"store.server": no server'),
    ],
)
def test_a_wrong_store_stops_the_start(
    load: Load, store: dict[str, Any], task: str, expected: str
) -> None:
    message = config_error(load, models={MODEL: {**A_MODEL, "task": task, "store": store}})
    assert expected in message
    assert MODEL in message
