"""Loading servers.json and models.json into a :class:`Catalog`.

Every problem stops the start with a :class:`ConfigError` whose message names the file, the entry
key and the field, for example ``servers.json: server "b1407f18-…": field "uri": Field required``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from model_proxy.shared.config.schema import ModelConfig, ServerConfig
from model_proxy.shared.errors import ConfigError, UnknownModel, UnknownServer

if TYPE_CHECKING:
    from model_proxy.shared.settings import Settings

__all__ = ["Catalog", "load_catalog"]

log = logging.getLogger(__name__)

# ${NAME} is replaced by the variable NAME; $${NAME} stands for a literal ${NAME}.
_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_Entry = TypeVar("_Entry", bound=BaseModel)


@dataclass(frozen=True)
class Catalog:
    """The configured PACS servers and models, keyed by their UUIDs (lower case)."""

    servers: Mapping[str, ServerConfig]
    models: Mapping[str, ModelConfig]
    default_server_id: str

    def server(self, server_id: str | None) -> tuple[str, ServerConfig]:
        """The server a request names, or the default one when it names none."""
        if server_id is None or server_id == "":
            return self.default_server_id, self.servers[self.default_server_id]
        key = server_id.lower()
        if key not in self.servers:
            raise UnknownServer(f"Not found: no server {server_id!r} in servers.json")
        return key, self.servers[key]

    def queues(self, default: str) -> list[str]:
        """Every queue jobs go to: the default and those models.json names."""
        return sorted({default, *(m.queue for m in self.models.values() if m.queue)})

    def model(self, model_id: str) -> ModelConfig:
        try:
            return self.models[model_id.lower()]
        except KeyError:
            raise UnknownModel(f"Not found: no model {model_id!r} in models.json") from None


def catalog_from_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> Catalog:
    """The catalog of the configured servers.json and models.json; ``environ`` (the process
    environment unless given) fills their ``${VARIABLE}`` references."""
    return load_catalog(
        settings.servers_file, settings.models_file, os.environ if environ is None else environ
    )


def load_catalog(servers_file: Path, models_file: Path, environ: Mapping[str, str]) -> Catalog:
    servers = _load_entries(servers_file, "server", ServerConfig, environ)
    models = _load_entries(models_file, "model", ModelConfig, environ)
    if not servers:
        raise ConfigError(f"{servers_file}: no servers defined; add at least one DICOMweb server")
    defaults = [key for key, server in servers.items() if server.is_default]
    if len(defaults) > 1:
        raise ConfigError(
            f"{servers_file}: more than one server has isDefault true "
            f"({', '.join(defaults)}); mark exactly one"
        )
    if defaults:
        default_server_id = defaults[0]
    else:
        default_server_id = next(iter(servers))
        log.info(
            "no server in %s has isDefault true; the first one, %s, is the default",
            servers_file,
            default_server_id,
        )
    for key, model in models.items():
        target = model.store.server if model.store is not None else None
        if target is not None and target.lower() not in servers:
            raise ConfigError(
                f'{models_file}: model "{key}": field "store.server": no server '
                f'"{target}" in {servers_file.name}'
            )
    return Catalog(servers=servers, models=models, default_server_id=default_server_id)


def _load_entries(
    path: Path, kind: str, schema: type[_Entry], environ: Mapping[str, str]
) -> dict[str, _Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except _DuplicateKey as exc:
        raise ConfigError(f'{path}: the key "{exc.key}" appears twice in one object') from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a JSON object keyed by {kind} UUIDs")

    entries: dict[str, _Entry] = {}
    for key, raw in document.items():
        where = f'{path}: {kind} "{key}"'
        try:
            uuid.UUID(key)
        except ValueError:
            raise ConfigError(f"{where}: the key must be a UUID") from None
        if key.lower() in entries:
            raise ConfigError(f"{where}: defined twice")
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a JSON object")
        resolved = _resolve_env(raw, environ, where)
        try:
            entries[key.lower()] = schema.model_validate(resolved)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {_describe(exc)}") from None
    return entries


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads keeps the last of two equal keys; a config file must not lose the first."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(key)
        document[key] = value
    return document


def _resolve_env(value: Any, environ: Mapping[str, str], where: str, field: str = "") -> Any:
    """Replace ``${NAME}`` in every string value with the variable NAME (``$${NAME}``: literal)."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            escaped, name = match.group(1), match.group(2)
            if escaped:
                return "${" + name + "}"
            if name not in environ:
                raise ConfigError(
                    f'{where}: field "{field}": environment variable {name} is not set'
                )
            return environ[name]

        return _ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {
            k: _resolve_env(v, environ, where, f"{field}.{k}" if field else k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env(v, environ, where, f"{field}[{i}]") for i, v in enumerate(value)]
    return value


def _describe(exc: ValidationError) -> str:
    """The first problems pydantic found, as ``field "a.b": message``; never the value itself."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        problems.append(f'field "{location}": {message}' if location else message)
    return "; ".join(problems)
