"""``python -m example_model [--host 127.0.0.1] [--port 8011]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from model_proxy.example_model.server import DEFAULT_HOST, DEFAULT_PORT, run


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m example_model", description="Serve the example model API."
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    args = parser.parse_args(argv)
    run(args.host, args.port)


if __name__ == "__main__":
    main()
