"""API keys for tests: settings whose key file holds one key per name, and each key's header."""

from __future__ import annotations

from pathlib import Path

from model_proxy.shared.api_keys import ApiKeyFile, Role
from model_proxy.shared.settings import Settings

__all__ = ["with_keys"]


def with_keys(
    settings: Settings, folder: Path, **roles: Role
) -> tuple[Settings, dict[str, dict[str, str]]]:
    """``settings`` with the key file ``folder/api-keys.json``, holding a key for each name in
    ``roles`` (``viewer`` or ``admin``); and the ``Authorization`` header of each name."""
    path = folder / "api-keys.json"
    keys = ApiKeyFile(path)
    headers = {}
    for name, role in roles.items():
        _, key = keys.add(name, role)
        headers[name] = {"Authorization": f"Bearer {key}"}
    return settings.model_copy(update={"api_keys_file": path}), headers
