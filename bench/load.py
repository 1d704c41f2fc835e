"""Requests per second that an HTTP endpoint answers under concurrent load, from another process.

:func:`measure_rps` uses ``wrk`` when it is installed (``apt-get install wrk``) and otherwise this
module's own generator, run as ``python -m bench.load URL --seconds S --connections C``: threads,
each with its own keep-alive ``requests.Session``, GET the URL in a loop and count the answers.
Python's generator tops out at a few thousand requests per second, so with it the two endpoints
compared may both be limited by the generator; the table says which generator was used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.together import at_once

__all__ = ["Load", "measure_rps"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Load:
    rps: float
    requests: int
    errors: int
    tool: str


def measure_rps(url: str, seconds: float, connections: int) -> Load:
    """Load ``url`` for ``seconds`` with ``connections`` keep-alive connections."""
    if shutil.which("wrk"):
        return _wrk(url, seconds, connections)
    argv = [sys.executable, "-m", "bench.load", url, f"--seconds={seconds}"]
    argv.append(f"--connections={connections}")
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        argv, capture_output=True, text=True, check=True, env=environ, timeout=seconds + 60
    )
    counts = json.loads(done.stdout)
    return Load(counts["rps"], counts["requests"], counts["errors"], "python")


def _wrk(url: str, seconds: float, connections: int) -> Load:
    duration = max(1, round(seconds))
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    output = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output: {output!r}")
    errors = int(failed.group(1)) if failed else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return Load(float(rate.group(1)), int(total.group(1)), errors, "wrk")


def _generate(url: str, seconds: float, connections: int) -> dict[str, float]:
    deadline = time.perf_counter() + seconds
    counts = {"requests": 0, "errors": 0}
    lock = threading.Lock()

    def client(_: int) -> None:
        session = requests.Session()
        done = errors = 0
        while time.perf_counter() < deadline:
            try:
                ok = session.get(url, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            done += 1
            errors += not ok
        with lock:
            counts["requests"] += done
            counts["errors"] += errors

    elapsed = at_once(connections, client)
    return {**counts, "seconds": elapsed, "rps": counts["requests"] / elapsed}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    print(json.dumps(_generate(args.url, args.seconds, args.connections)))


if __name__ == "__main__":
    main()
