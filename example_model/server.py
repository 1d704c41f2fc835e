"""Serving the example model with uvicorn."""

from __future__ import annotations

import uvicorn

from model_proxy.example_model.app import create_app

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "run"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8011


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve a new example model app until interrupted; uvicorn configures the logging."""
    uvicorn.run(create_app(), host=host, port=port, log_level="info")
