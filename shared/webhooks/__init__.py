"""Webhooks: callback URLs checked against an allowlist, kept beside their job, and POSTed the
job resource, signed the Standard Webhooks way, when it ends.

Nothing here does I/O or reads settings: the broker registers callbacks
(:mod:`model_proxy.broker.callbacks`), a worker task delivers them
(:mod:`model_proxy.workers.webhooks`). Their records in Redis are
:mod:`~model_proxy.shared.webhooks.records` (imported by its path: the settings use this
package)."""

from model_proxy.shared.webhooks.backoff import next_delay
from model_proxy.shared.webhooks.signing import signing_key, webhook_headers, webhook_signature
from model_proxy.shared.webhooks.urls import (
    MAX_URL_LENGTH,
    Origin,
    check_callback_url,
    parse_origins,
    public_url,
)

__all__ = [
    "MAX_URL_LENGTH",
    "Origin",
    "check_callback_url",
    "next_delay",
    "parse_origins",
    "public_url",
    "signing_key",
    "webhook_headers",
    "webhook_signature",
]
