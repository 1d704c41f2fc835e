"""Probing a ``statusUri``: what is shown of a URI, the verdict, and failures in our words."""

from __future__ import annotations

import io
import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from devtools.processes import free_port
from model_proxy.shared.dicomweb.auth import BasicAuth
from model_proxy.shared.errors import PacsAuthFailed
from model_proxy.shared.probe import EndpointStatus, describe_failure, probe, public_uri

SERVER = "b5208f48-f748-4339-9402-d1148dab571e"
SECRET = "s3cret-Pa55word"


# --- URIs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"https://reader:{SECRET}@pacs.example/dicom-web", "https://pacs.example/dicom-web"),
        (f"http://reader:{SECRET}@127.0.0.1:8042/a?b=1", "http://127.0.0.1:8042/a?b=1"),
        (f"http://{SECRET}@[::1]:8042/studies", "http://[::1]:8042/studies"),
        (f"redis://:{SECRET}@redis:6379/0", "redis://redis:6379/0"),
        (f"http://m/predict?api_key={SECRET}&x=1", "http://m/predict?api_key=***&x=1"),
        (f"http://m/health#access_token={SECRET}", "http://m/health"),
        ("http://model:8011/segmentation?wrap=true", "http://model:8011/segmentation?wrap=true"),
    ],
)
def test_uris_are_shown_without_userinfo_or_secrets(uri: str, shown: str) -> None:
    assert public_uri(uri) == shown


def test_an_entry_strips_userinfo_from_both_of_its_uris() -> None:
    entry = EndpointStatus(
        f"https://u:{SECRET}@pacs/dicom-web", f"https://u:{SECRET}@pacs/dicom-web/studies", "up"
    )
    assert entry.uri == "https://pacs/dicom-web"
    assert entry.status_uri == "https://pacs/dicom-web/studies"
    assert SECRET not in json.dumps(entry.to_json())


# --- our own wording for failures --------------------------------------------------------------


def _wrapped(outer: type[requests.RequestException], inner: BaseException) -> BaseException:
    """A requests error as urllib3 raises it: the root cause several links down."""
    try:
        try:
            raise inner
        except BaseException as cause:
            raise OSError(f"pool failure: {SECRET}") from cause
    except OSError as middle:
        return outer(middle)


@pytest.mark.parametrize(
    ("error", "wording"),
    [
        (requests.ConnectTimeout(f"connect {SECRET}"), "timed out after 3 s"),
        (requests.ReadTimeout(f"read {SECRET}"), "timed out after 3 s"),
        (
            _wrapped(requests.ConnectionError, ConnectionRefusedError(111, SECRET)),
            "connection refused",
        ),
        (
            _wrapped(requests.ConnectionError, OSError(f"unreachable {SECRET}")),
            "cannot connect",
        ),
        (
            _wrapped(requests.exceptions.SSLError, ssl.SSLCertVerificationError(SECRET)),
            "ADVICE",
        ),
        (_wrapped(requests.exceptions.SSLError, ssl.SSLError(SECRET)), "TLS handshake failed"),
        (requests.TooManyRedirects(SECRET), "too many redirects"),
        (
            PacsAuthFailed(f"server {SERVER}: its signInServer refused the login (HTTP 401)"),
            "its signInServer refused the login (HTTP 401)",
        ),
        (ValueError(f"password={SECRET}"), "check failed"),
    ],
)
def test_failures_are_described_in_our_words_only(error: BaseException, wording: str) -> None:
    described = describe_failure(error, 3.0, "ADVICE")
    assert described == wording
    assert SECRET not in described


class _Canned(BaseAdapter):
    """A transport answering from a function of the request: no network."""

    def __init__(
        self, answer: Callable[[requests.PreparedRequest], tuple[int, dict[str, str]]]
    ) -> None:
        super().__init__()
        self.answer = answer
        self.seen: list[requests.PreparedRequest] = []

    def send(  # type: ignore[override]  # the options requests passes are not needed here
        self, request: requests.PreparedRequest, **options: Any
    ) -> requests.Response:
        self.seen.append(request)
        status, headers = self.answer(request)
        response = requests.Response()
        response.status_code = status
        response.headers.update(headers)
        response.url = str(request.url)
        response.request = request
        response.raw = io.BytesIO(b"")
        response._content = b""
        return response

    def close(self) -> None:
        return None


def _session(adapter: _Canned) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


def test_a_200_after_a_redirect_is_up_and_the_auth_header_is_sent() -> None:
    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str]]:
        if request.url == "http://model/":
            return 307, {"Location": "http://model/docs"}
        return 200, {}

    adapter = _Canned(answer)
    entry = probe(_session(adapter), "http://model/predict", "http://model/", 3.0)
    assert (entry.status, entry.status_code, entry.error) == ("up", 200, None)
    assert entry.latency_ms is not None and entry.latency_ms >= 0
    assert [r.url for r in adapter.seen] == ["http://model/", "http://model/docs"]

    adapter = _Canned(lambda request: (200, {}))
    probe(_session(adapter), "http://p", "http://p/studies", 3.0, BasicAuth("reader", SECRET))
    assert adapter.seen[0].headers["Authorization"].startswith("Basic ")


def test_refused_credentials_are_down_with_the_http_status() -> None:
    adapter = _Canned(lambda request: (401, {}))
    auth = BasicAuth("reader", SECRET)
    entry = probe(_session(adapter), "http://p", "http://p/studies", 3.0, auth)
    assert (entry.status, entry.status_code) == ("down", 401)
    assert entry.error == "HTTP 401 (credentials refused)"
    assert len(adapter.seen) == 1  # basic auth cannot be renewed: no second try


def test_a_refused_token_is_renewed_once_as_the_workers_do() -> None:
    class RenewingAuth:
        def __init__(self) -> None:
            self.token = "old"

        def headers(self) -> dict[str, str]:
            return {"Authorization": f"Bearer {self.token}"}

        def renew(self, rejected: Mapping[str, str]) -> bool:
            self.token = "new"
            return True

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str]]:
        return (200, {}) if request.headers["Authorization"] == "Bearer new" else (403, {})

    entry = probe(_session(_Canned(answer)), "http://p", "http://p/studies", 3.0, RenewingAuth())
    assert entry.status == "up"


def test_a_non_200_answer_is_down() -> None:
    entry = probe(_session(_Canned(lambda r: (503, {}))), "http://m", "http://m/health", 3.0)
    assert (entry.status, entry.status_code, entry.error) == ("down", 503, "HTTP 503")


def test_a_closed_port_is_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    with requests.Session() as session:
        entry = probe(session, url, url, 2.0)
    assert (entry.status, entry.status_code, entry.error) == ("down", None, "connection refused")
