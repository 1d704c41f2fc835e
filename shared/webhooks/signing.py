"""Signing webhooks the Standard Webhooks way (https://www.standardwebhooks.com).

The secret is written ``whsec_<base64>``; the key is the base64-decoded part. Each message
carries ``webhook-id`` (unique per message, the same on every retry), ``webhook-timestamp``
(Unix seconds) and ``webhook-signature``: ``v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.
{body}")>``. I/O-free.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from pydantic import SecretStr

__all__ = ["SECRET_PREFIX", "signing_key", "webhook_headers", "webhook_signature"]

SECRET_PREFIX = "whsec_"
_MIN_KEY_BYTES = 24  # the Standard Webhooks minimum; shorter keys are too easy to guess
_MAX_KEY_BYTES = 64


def signing_key(secret: SecretStr) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError, naming the setting and never
    the secret, when it is not one."""
    text = secret.get_secret_value().strip()
    problem = (
        "MODEL_PROXY_WEBHOOK_SECRET must be whsec_ followed by the base64 of "
        f"{_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} random bytes"
    )
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(problem)
    try:
        key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(problem) from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(problem)
    return key


def webhook_signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of the signed
    content."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one delivery attempt, and its content type."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(key, message_id, timestamp, body),
    }
