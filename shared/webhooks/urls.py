"""Which callback URLs a job may be given: those of an allowlist of origins, and nothing else.

An origin is ``scheme://host[:port]`` (http or https); a URL is allowed when its scheme, host
and port (the scheme's default when absent) equal one origin's. A URL with userinfo, of another
scheme, with a space or control character (``urlsplit`` silently drops tabs and line breaks, so
such a URL would pass here and fail at every try), or over :data:`MAX_URL_LENGTH` characters is
refused. The check runs at submit and again
before each delivery (the settings may have changed). I/O-free: no name is resolved.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from model_proxy.shared.errors import CallbackNotAllowed

__all__ = ["MAX_URL_LENGTH", "Origin", "check_callback_url", "parse_origins", "public_url"]

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SETTING = "MODEL_PROXY_CALLBACK_ORIGINS"

Origin = tuple[str, str, int]
"""Scheme, host (lower case) and port."""


def _origin_of(parts: SplitResult) -> Origin | None:
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port


def parse_origins(values: Iterable[str]) -> frozenset[Origin]:
    """The allowlist from the setting's entries; ValueError naming the setting for an entry
    that is not a bare ``scheme://host[:port]``."""
    origins = set()
    for value in values:
        parts = urlsplit(value.strip())
        origin = _origin_of(parts)
        extra = parts.username or parts.password or parts.path not in ("", "/")
        if origin is None or extra or parts.query or parts.fragment:
            raise ValueError(f"{_SETTING}: {value!r} is not an origin, scheme://host[:port]")
        origins.add(origin)
    return frozenset(origins)


def check_callback_url(url: str, origins: frozenset[Origin]) -> str:
    """``url`` when a job may call it back; else :class:`CallbackNotAllowed` saying why (and
    which setting allows callbacks)."""
    if not origins:
        raise CallbackNotAllowed(f"callbacks are not allowed here: {_SETTING} is empty")
    if len(url) > MAX_URL_LENGTH:
        raise CallbackNotAllowed(f"a callback URL has at most {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise CallbackNotAllowed("a callback URL has no spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        raise CallbackNotAllowed(f"a callback URL is http or https, of an origin of {_SETTING}")
    if "@" in parts.netloc:
        raise CallbackNotAllowed("a callback URL carries no user name or password")
    origin = _origin_of(parts)
    if origin is None or origin not in origins:
        raise CallbackNotAllowed(f"the callback's origin is not one of {_SETTING}")
    return url


def public_url(url: str) -> str:
    """The URL's origin, ``scheme://host[:port]``: what others than its submitter may see (a
    webhook URL's path, query and fragment often carry the receiver's secret)."""
    parts = urlsplit(url)
    return parts._replace(path="", query="", fragment="").geturl()
