"""A testing aid: what the example model received, so tests can check what model-proxy sent.

``GET /_debug/received`` shows how many predict requests with a readable body arrived since the
last reset (those answered with ``?fail=`` included) and describes the most recent ones: path,
transport (``json`` or ``multipart``), body shape, top-level keys of a keyed body, and per
instance its SOPInstanceUID, the SHA-256 of its Part-10 bytes, their length and the data-filter
key it came under (``pre/slice`` when nested; null without data filters).
``POST /_debug/reset`` forgets them. A real model needs none of this.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from model_proxy.example_model.inference import ReceivedBody

__all__ = ["ReceivedLog"]


class ReceivedLog:
    """The count of predict requests and a description of the last ``limit`` of them.

    Only the event loop touches it, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=limit)
        self._count = 0

    def record(self, path: str, received: ReceivedBody) -> None:
        body = received.model_input
        self._count += 1
        self._recent.append(
            {
                "path": path,
                "transport": body.transport,
                "shape": body.shape,
                "keys": list(body.keys),
                "instances": [
                    {
                        "sopInstanceUID": i.sop_uid,
                        "sha256": i.sha256,
                        "size": i.size,
                        "dataKey": encoded.data_key,
                    }
                    for i, encoded in zip(received.instances, body.instances, strict=True)
                ],
            }
        )

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self._count, "recent": list(self._recent)}

    def clear(self) -> None:
        self._recent.clear()
        self._count = 0
