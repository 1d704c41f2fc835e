"""Calling a model: POST the streamed body to its ``uri`` verbatim, and read its answer.

The answer is read as it streams in, up to the job's ``answer`` cap (:class:`SizeLimits`): a
longer one fails with ``model_answer_too_large`` without being read whole. HTTPS certificates
are verified as the model's ``tlsVerify`` and ``caBundle`` in models.json say.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass

import orjson
import requests

from model_proxy.shared.config import Catalog, ModelConfig, SizeLimits
from model_proxy.shared.errors import (
    BadModelResponse,
    ModelAnswerTooLarge,
    ModelFailed,
    ModelTimeout,
    ModelUnreachable,
)
from model_proxy.shared.http import Peer, Timeouts, tls_advice, translated_errors

__all__ = ["ModelClient", "unwrap_model_json"]

_CHUNK = 1 << 16
_ERROR_BODY_BYTES = 64 * 1024  # of a failed call's answer, read for its short error text


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


@dataclass
class ModelClient:
    """POSTs model bodies over one pooled session, with connect and read timeouts.

    ``catalog`` gives each model's TLS settings and size caps (by the id :meth:`infer` is
    called with); ``limits`` are the caps of models that set none (None: no cap).
    """

    session: requests.Session
    timeouts: Timeouts
    _: KW_ONLY
    catalog: Catalog | None = None
    limits: SizeLimits | None = None

    def infer(
        self,
        model_id: str,
        uri: str,
        body: Iterable[bytes] | bytes,
        time_left: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Send ``body`` (chunked when it is an iterable) and return the unwrapped JSON document.

        ``time_left`` shortens the read timeout to what remains of the job's time limit;
        ``headers`` are the body's own (its Content-Type, JSON unless given, and context).
        """
        read = self.timeouts.read if time_left is None else min(self.timeouts.read, time_left)
        model = self.catalog.models.get(model_id.lower()) if self.catalog else None
        peer = Peer(
            f"model {model_id}",
            timeout=ModelTimeout,
            unreachable=ModelUnreachable,
            failed=ModelUnreachable,
            failed_text="the request failed",
            tls=tls_advice(model_id, "uri", kind="model"),
        )
        with translated_errors(peer):
            response = self.session.post(
                uri,
                data=body,
                headers={
                    "Content-Type": "application/json",
                    **(headers or {}),
                    "Accept": "application/json",
                },
                timeout=(self.timeouts.connect, read),
                stream=True,
                verify=model.tls_verification if model is not None else None,
            )
            with response:
                if not 200 <= response.status_code < 300:
                    start, _ = _read_up_to(response, _ERROR_BODY_BYTES)
                    raise ModelFailed(
                        f"model {model_id} answered HTTP {response.status_code}" + _detail(start),
                        status=response.status_code,
                    )
                cap = self._answer_cap(model)
                content, too_large = _read_up_to(response, cap)
        if too_large:
            raise ModelAnswerTooLarge(
                f"model {model_id} answered with more than {cap} bytes; raise maxAnswerBytes of "
                "the model in models.json (or MODEL_PROXY_MAX_ANSWER_BYTES) to accept it"
            )
        try:
            return unwrap_model_json(content)
        except BadModelResponse:
            raise BadModelResponse(f"model {model_id} did not answer with JSON") from None

    def _answer_cap(self, model: ModelConfig | None) -> int | None:
        if self.limits is None:
            return model.max_answer_bytes if model is not None else None
        return self.limits.for_model(model).answer


def _read_up_to(response: requests.Response, limit: int | None) -> tuple[bytes, bool]:
    """The answer, read as it arrives, and whether it is longer than ``limit`` bytes (None: no
    limit); reading stops as soon as it is, or as soon as Content-Length says it will be."""
    declared = response.headers.get("Content-Length", "")
    if limit is not None and declared.isdigit() and int(declared) > limit:
        return b"", True
    content = bytearray()
    for chunk in response.iter_content(_CHUNK):
        content += chunk
        if limit is not None and len(content) > limit:
            return bytes(content[:limit]), True
    return bytes(content), False


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
