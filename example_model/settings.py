"""Settings of the example model. Nothing is read from the environment: the caller passes them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ExampleModelSettings"]


@dataclass(frozen=True)
class ExampleModelSettings:
    """How the example model labels its results and how much it remembers for tests."""

    recent_limit: int = 100
    """How many requests ``GET /_debug/received`` describes (the most recent ones)."""
    color: str = "rgb(255, 64, 64)"
    """Colour of every segment and region of interest."""
    class_name: str = "above-threshold"
    """``className`` of every segment and region of interest."""

    def __post_init__(self) -> None:
        if self.recent_limit < 1:
            raise ValueError("recent_limit must be at least 1")
