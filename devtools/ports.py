"""``python -m devtools.ports PORT...``: exit 1 with one line per loopback port already in use.

``make demo`` runs it first, so that a demo part left running (or anything else on 8042, 8011 or
8002) is named instead of being silently served from.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devtools.errors import PortInUseError
from devtools.processes import ensure_port_free

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.ports", description=__doc__)
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args(argv)
    taken = 0
    for port in args.ports:
        try:
            ensure_port_free(port, "demo")
        except PortInUseError as exc:
            print(exc, file=sys.stderr)
            taken += 1
    return 1 if taken else 0


if __name__ == "__main__":
    sys.exit(main())
