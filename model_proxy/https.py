"""Whether ``serve`` speaks HTTPS, and with which certificate.

As the original proxy does, ``zhiva.crt`` and ``zhiva.key`` in the working directory are used
when both are there; the settings can name other files. Without them ``serve`` speaks plain
HTTP and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_proxy.shared.errors import ConfigError
from model_proxy.shared.settings import Settings

__all__ = ["DEFAULT_CERT", "DEFAULT_KEY", "TlsFiles", "tls_files"]

DEFAULT_CERT = Path("zhiva.crt")
DEFAULT_KEY = Path("zhiva.key")


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path


def tls_files(settings: Settings) -> TlsFiles | None:
    """The certificate and key to serve HTTPS with, or None for plain HTTP."""
    named = settings.tls_cert_file is not None or settings.tls_key_file is not None
    cert = settings.tls_cert_file or DEFAULT_CERT
    key = settings.tls_key_file or DEFAULT_KEY
    if not named and not cert.exists() and not key.exists():
        return None
    for path, variable in ((cert, "MODEL_PROXY_TLS_CERT_FILE"), (key, "MODEL_PROXY_TLS_KEY_FILE")):
        if not path.is_file():
            raise ConfigError(
                f"{path}: HTTPS needs both a certificate and a key, and this file is missing "
                f"(set {variable}, or run `model-proxy tls` to make a self-signed pair)"
            )
    return TlsFiles(cert, key)
