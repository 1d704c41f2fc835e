"""``model-proxy check``: the configuration is valid, and every server and model answers.

Each server is asked once, with its auth and TLS settings, at its ``statusUri`` or else with a
one-line QIDO-RS search (``{uri}/studies?limit=1``); each model at its ``statusUri`` (a model's
``uri`` takes POSTs only, so one without a ``statusUri`` is reported as unknown). The exit status
is 0 when nothing is down, 1 when something is, 2 when the configuration itself is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TextIO

from model_proxy.access_report import access_rows
from model_proxy.shared.config import Catalog, ServerConfig, catalog_from_settings
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.probe import EndpointStatus, probe_model, probe_server, public_uri
from model_proxy.shared.settings import Settings

__all__ = ["CheckRow", "check_catalog", "run_check"]

EXIT_OK = 0
EXIT_DOWN = 1


@dataclass(frozen=True)
class CheckRow:
    kind: str  # "server" or "model"
    key: str
    target: str
    status: str  # "up", "down", "unknown"
    detail: str


def check_catalog(catalog: Catalog, settings: Settings, timeout: float) -> list[CheckRow]:
    sessions = ServerSessions.for_checks(
        catalog,
        settings.redis_url,
        timeout=timeout,
        refresh_margin=settings.token_refresh_margin,
        lock_timeout=settings.token_lock_timeout,
        redis_prefix=settings.redis_prefix,
    )
    jobs: list[tuple[str, str, str, Callable[[], EndpointStatus | str]]] = []
    for key, server in catalog.servers.items():
        target = server.status_uri or f"{server.dicomweb_root}/studies?limit=1"
        jobs.append(("server", key, target, _server_check(sessions, key, server, target, timeout)))
    for key, model in catalog.models.items():
        if model.status_uri is None:
            jobs.append(("model", key, model.uri, lambda: "no statusUri; its uri takes POSTs"))
        else:
            jobs.append(("model", key, model.status_uri, partial(probe_model, model, timeout)))
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(lambda job: job[3](), jobs))
    finally:
        sessions.close()
    rows = []
    for (kind, key, target, _), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, str):
            rows.append(CheckRow(kind, key, public_uri(target), "unknown", outcome))
        else:
            detail = outcome.error or (
                f"HTTP {outcome.status_code} in {outcome.latency_ms:g} ms"
                if outcome.status_code is not None and outcome.latency_ms is not None
                else ""
            )
            rows.append(CheckRow(kind, key, public_uri(target), outcome.status, detail))
    return rows


def _server_check(
    sessions: ServerSessions, key: str, server: ServerConfig, target: str, timeout: float
) -> Callable[[], EndpointStatus | str]:
    def check() -> EndpointStatus | str:
        try:
            return probe_server(sessions, key, server, timeout, target)
        except ModelProxyError as error:  # its auth cannot be set up (no Redis for its tokens)
            return error.message

    return check


def run_check(settings: Settings, timeout: float, out: TextIO, host: str = "127.0.0.1") -> int:
    catalog = catalog_from_settings(settings)
    out.write(f"configuration: {settings.servers_file} and {settings.models_file} are valid\n")
    access = access_rows(settings, host, timeout)
    rows = check_catalog(catalog, settings, timeout)
    _write_table(
        out,
        ("KIND", "KEY", "CHECKED", "STATUS", "DETAIL"),
        [(row.kind, row.key, row.target, _MARKERS[row.status], row.detail) for row in rows],
    )
    down = [row for row in rows if row.status == "down"]
    out.write(
        f"{len(rows) - len(down)} of {len(rows)} answered or have nothing to check"
        + (f"; {len(down)} down\n" if down else "\n")
    )
    out.write("\n")
    _write_table(
        out,
        ("ACCESS", "VALUE", "STATUS", "DETAIL"),
        [(row.setting, row.value, _MARKERS[row.status], row.detail) for row in access],
    )
    return EXIT_DOWN if down or any(row.status == "down" for row in access) else EXIT_OK


_MARKERS = {"up": "up", "down": "DOWN", "unknown": "unknown", "ok": "ok", "unset": "-"}


def _write_table(out: TextIO, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell; the last one unpadded."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:{width}}}" for width in widths[:-1]) + "  {}"
    for cells in (header, *rows):
        out.write(line.format(*cells).rstrip() + "\n")
