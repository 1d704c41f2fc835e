"""Calling a model's inference API: POST the streamed body to its ``uri`` verbatim."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import requests

from model_proxy.shared.errors import BadModelResponse, ModelFailed, ModelTimeout, ModelUnreachable
from model_proxy.shared.http import Peer, Timeouts, translated_errors

__all__ = ["ModelClient", "unwrap_model_json"]


def unwrap_model_json(body: bytes) -> bytes:
    """The model's JSON document, as bytes, ready for the viewer.

    zhiva's reference models answer with their document encoded once more as a JSON string
    (``"{\\"1.2.3\\": ...}"``); such an answer is unwrapped once. Any other JSON passes as it is.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadModelResponse("the model did not answer with JSON") from None
    if isinstance(document, str):
        inner = document.encode()
        try:
            if isinstance(orjson.loads(inner), dict):
                return inner
        except orjson.JSONDecodeError:
            pass
    return body


class ModelClient:
    """POSTs model bodies over one pooled session, with connect and read timeouts."""

    def __init__(self, session: requests.Session, timeouts: Timeouts) -> None:
        self._session = session
        self._timeouts = timeouts

    def infer(
        self,
        model_id: str,
        uri: str,
        body: Iterable[bytes] | bytes,
        time_left: float | None = None,
    ) -> bytes:
        """Send ``body`` (chunked when it is an iterable) and return the unwrapped JSON document.

        ``time_left`` shortens the read timeout to what remains of the job's time limit.
        """
        read = self._timeouts.read if time_left is None else min(self._timeouts.read, time_left)
        peer = Peer(
            f"model {model_id}",
            timeout=ModelTimeout,
            unreachable=ModelUnreachable,
            failed=ModelUnreachable,
            failed_text="the request failed",
        )
        with translated_errors(peer):
            response = self._session.post(
                uri,
                data=body,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                timeout=(self._timeouts.connect, read),
            )
        if not 200 <= response.status_code < 300:
            raise ModelFailed(
                f"model {model_id} answered HTTP {response.status_code}"
                + _detail(response.content),
                status=response.status_code,
            )
        try:
            return unwrap_model_json(response.content)
        except BadModelResponse:
            raise BadModelResponse(f"model {model_id} did not answer with JSON") from None


def _detail(content: bytes) -> str:
    """A model's own short error text (``detail`` or ``message``), never an echo of its input."""
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(document, dict):
        for key in ("message", "detail"):
            text = document.get(key)
            if isinstance(text, str) and text:
                return f": {text[:200]}"
    return ""
