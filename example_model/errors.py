"""The example model's one error: the request cannot be used. It becomes a 422 answer."""

from __future__ import annotations

__all__ = ["InvalidInput"]


class InvalidInput(ValueError):
    """The body is not what the model contract describes, or an instance cannot be read.

    The message says where in the body the problem is, and is shown to the caller as
    ``{"detail": message}`` with status 422.
    """
