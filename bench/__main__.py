"""``python -m bench [--smoke]``: run the benchmark and print its table.

The exit status is 0 when every row was measured (whether or not it met its goal: numbers on
shared machines are noisy, so goals are reported, never enforced), 1 when a row failed to run and
2 when the parts could not be started.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence

from bench.report import render_table
from bench.suite import FULL, SMOKE, run
from devtools.errors import MissingBinaryError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks that every row runs (seconds)"
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    started = time.perf_counter()
    try:
        rows = run(sizes)
    except MissingBinaryError as exc:
        print(f"bench: could not run: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"bench: could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    mode = "smoke" if args.smoke else "full"
    print(
        f"model-proxy benchmark ({mode}), {time.strftime('%Y-%m-%d')}, Python "
        f"{platform.python_version()}, {platform.machine()}, {elapsed:.0f} s\n"
    )
    print(render_table(rows))
    return 1 if any(row.passed is None for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
