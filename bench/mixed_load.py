"""A bounded load test of the whole stack: many clients, every kind of request, for a while.

``python -m bench.mixed_load [--clients N] [--seconds S]`` starts the real parts (Orthanc,
Redis, the sink model, the API served by uvicorn, worker processes; see :mod:`bench.stack`),
then runs ``N`` concurrent clients for ``S`` seconds on loopback. Each client picks one kind of
request after another:

* ``sync-same``: a fresh run of one series (identical requests at once share a job);
* ``sync-distinct``: a fresh run of one instance among many (a job each);
* ``cached``: the same series without ``no-cache`` (answered from the stored result);
* ``async-poll``: ``Prefer: respond-async``, then ``GET /jobs/{id}`` until it ends;
* ``cancel``: an async fresh run, then ``DELETE /jobs/{id}``;
* ``bad-input``: a malformed UID, an unknown model or malformed data-filters.

It reports the requests served, every 5xx (none is expected: Redis, the PACS and the model are
healthy), accepted jobs that had not ended a while after the load stopped (none is expected),
p50/p99 latency per kind, the API's and the workers' memory growth, and Redis's memory at the
end. It exits 1 when a goal is missed. Every request goes to 127.0.0.1 and the run stops by
itself after ``S`` seconds plus a bounded drain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.stack import ModelKey, Series, Stack
from devtools.errors import MissingBinaryError
from devtools.processes import ManagedProcess

__all__ = ["LoadReport", "main", "run_mixed_load"]

KINDS = ("sync-same", "sync-distinct", "cached", "async-poll", "cancel", "bad-input")
_WEIGHTS = (3, 3, 6, 2, 1, 2)
# What each kind may answer; anything else (and every 5xx) is unexpected.
_EXPECTED: dict[str, set[int]] = {
    "sync-same": {200, 202, 429},
    "sync-distinct": {200, 202, 429},
    "cached": {200, 202, 429},
    "async-poll": {200, 202, 429},
    "cancel": {200, 202, 409, 410, 429},
    "bad-input": {400, 404, 422},
}
_FINISHED = {"succeeded", "failed", "cancelled"}


@dataclass
class LoadReport:
    clients: int
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    accepted_jobs: set[str] = field(default_factory=set)
    not_terminal: list[str] = field(default_factory=list)
    rss_kib: dict[str, tuple[int, int]] = field(default_factory=dict)
    redis_memory: int = 0

    @property
    def served(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)

    @property
    def goals_met(self) -> bool:
        return (
            self.server_errors == 0
            and not self.unexpected
            and not self.transport_errors
            and not self.not_terminal
        )

    def render(self) -> str:
        lines = [
            f"mixed load: {self.clients} clients for {self.seconds:.0f} s on loopback",
            f"requests served: {self.served} ({self.served / self.seconds:.0f}/s)",
            f"5xx answers: {self.server_errors} (goal 0)",
            f"unexpected answers: {dict(self.unexpected) or 0}",
            f"transport errors: {dict(self.transport_errors) or 0}",
            f"accepted jobs: {len(self.accepted_jobs)}, not terminal at the end: "
            f"{len(self.not_terminal)} (goal 0)",
            "",
            f"{'kind':<14} {'requests':>9} {'p50 ms':>9} {'p99 ms':>9}  statuses",
        ]
        for kind in KINDS:
            times = sorted(self.latencies.get(kind, []))
            statuses = {s: n for (k, s), n in sorted(self.statuses.items()) if k == kind}
            lines.append(
                f"{kind:<14} {len(times):>9} {_percentile(times, 50):>9.1f} "
                f"{_percentile(times, 99):>9.1f}  {statuses}"
            )
        lines.append("")
        for name, (before, after) in self.rss_kib.items():
            lines.append(
                f"RSS {name}: {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB "
                f"({(after - before) / 1024:+.1f} MiB)"
            )
        lines.append(f"Redis memory at the end: {self.redis_memory / 2**20:.1f} MiB")
        return "\n".join(lines)


def _percentile(sorted_values: list[float], percent: int) -> float:
    if not sorted_values:
        return 0.0
    if len(sorted_values) == 1:
        return sorted_values[0] * 1000
    cut = statistics.quantiles(sorted_values, n=100, method="inclusive")
    return cut[min(percent, 99) - 1] * 1000


class _Client:
    """One simulated viewer or script; records what it saw into the shared report."""

    def __init__(
        self, http: httpx.AsyncClient, stack: Stack, series: list[Series], report: LoadReport
    ) -> None:
        self._http = http
        self._stack = stack
        self._series = series
        self._report = report
        self._random = random.Random()

    async def run(self, until: float) -> None:
        while time.monotonic() < until:
            kind = self._random.choices(KINDS, _WEIGHTS)[0]
            started = time.monotonic()
            try:
                status = await getattr(self, "_" + kind.replace("-", "_"))()
            except httpx.HTTPError as exc:
                self._report.transport_errors[type(exc).__name__] += 1
                continue
            self._report.latencies[kind].append(time.monotonic() - started)
            self._report.statuses[(kind, status)] += 1
            if status not in _EXPECTED[kind] or status >= 500:
                self._report.unexpected[(kind, status)] += 1

    def _fresh(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache"}

    async def _get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        answer = await self._http.get(url, headers=headers or {})
        job = answer.headers.get("x-job-id")
        if answer.status_code == 202:
            job = answer.json().get("id")
        if job:
            self._report.accepted_jobs.add(job)
        return answer

    async def _sync_same(self) -> int:
        url = self._stack.series_url(ModelKey.SINK, self._series[0])
        return (await self._get(url, self._fresh())).status_code

    async def _sync_distinct(self) -> int:
        series = self._random.choice(self._series)
        index = self._random.randrange(series.slices)
        url = self._stack.instance_url(ModelKey.SINK, series, index)
        return (await self._get(url, self._fresh())).status_code

    async def _cached(self) -> int:
        url = self._stack.series_url(ModelKey.SINK, self._series[1])
        return (await self._get(url)).status_code

    async def _submit(self, model: str) -> httpx.Response:
        """A fresh run of a random series, answered at once (202 with its job's location)."""
        url = self._stack.series_url(model, self._random.choice(self._series))
        return await self._get(url, {**self._fresh(), "Prefer": "respond-async"})

    async def _async_poll(self) -> int:
        answer = await self._submit(ModelKey.SINK)
        if answer.status_code != 202:
            return answer.status_code
        location = answer.headers["location"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            polled = await self._http.get(f"{self._stack.api_url}{location}")
            if polled.status_code != 200 or polled.json()["state"] in _FINISHED:
                return polled.status_code
            await asyncio.sleep(0.2)
        return 599  # never ended: counted as unexpected

    async def _cancel(self) -> int:
        answer = await self._submit(ModelKey.DELAY)
        if answer.status_code != 202:
            return answer.status_code
        cancelled = await self._http.delete(f"{self._stack.api_url}{answer.headers['location']}")
        return cancelled.status_code

    async def _bad_input(self) -> int:
        series = self._series[0]
        choice = self._random.randrange(3)
        if choice == 0:
            url = self._stack.series_url(ModelKey.SINK, series).replace(
                series.series_uid, "1.2.x-not-a-uid"
            )
        elif choice == 1:
            url = self._stack.series_url("00000000-0000-4000-8000-000000000000", series)
        else:
            url = self._stack.series_url(ModelKey.SINK, series) + "?data-filters=[{"
        return (await self._http.get(url)).status_code


def _rss_kib(process: ManagedProcess) -> int:
    """Resident memory of a process and its children, in KiB (Linux /proc)."""
    total = 0
    pid = process.process.pid
    pids = [pid, *_children(pid)]
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        for task in tasks:
            text = (task / "children").read_text().split()
            for child in map(int, text):
                found += [child, *_children(child)]
    except OSError:
        pass
    return found


async def _drive(stack: Stack, series: list[Series], clients: int, seconds: float) -> LoadReport:
    report = LoadReport(clients, seconds)
    # idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s) ends
    # them, so that a request never races the server closing its connection
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0
    )
    timeout = httpx.Timeout(120.0, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(_Client(http, stack, series, report).run(until) for _ in range(clients))
        )
        report.not_terminal = await _unfinished(http, stack.api_url, report.accepted_jobs)
    return report


async def _unfinished(http: httpx.AsyncClient, api: str, jobs: set[str]) -> list[str]:
    """Jobs that had not ended within a bounded drain after the load stopped."""
    pending = set(jobs)
    deadline = time.monotonic() + 90
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            answer = await http.get(f"{api}/jobs/{job_id}")
            if answer.status_code == 404 or answer.json().get("state") in _FINISHED:
                pending.discard(job_id)
        if pending:
            await asyncio.sleep(0.5)
    return sorted(pending)


def run_mixed_load(workdir: Path, clients: int, seconds: float, workers: int = 2) -> LoadReport:
    stack = Stack(workdir, model_delay=0.5, rss_sizes=(), shared_runs=0, shared_delay=0.0)
    stack.start()
    try:
        series = [stack.load_series(4, 32, 32, seed) for seed in range(8)]
        queues = "inference,bench-delay"
        with stack.workers(queues, [8] * workers) as processes:
            api = stack.api_process
            watched = {"api": api, **{p.name: p for p in processes}}
            before = {name: _rss_kib(p) for name, p in watched.items()}
            report = asyncio.run(_drive(stack, series, clients, seconds))
            report.rss_kib = {name: (before[name], _rss_kib(p)) for name, p in watched.items()}
            client = stack.redis.client()
            try:
                report.redis_memory = int(client.info("memory")["used_memory"])
            finally:
                client.close()
        return report
    finally:
        stack.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_load", description=__doc__)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="model-proxy-load-") as tmp:
        try:
            report = run_mixed_load(Path(tmp), args.clients, args.seconds, args.workers)
        except MissingBinaryError as exc:
            print(f"mixed load: could not run: {exc}", file=sys.stderr)
            return 2
    print(report.render())
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "served": report.served,
                    "server_errors": report.server_errors,
                    "not_terminal": len(report.not_terminal),
                    "accepted_jobs": len(report.accepted_jobs),
                }
            )
        )
    return 0 if report.goals_met else 1


if __name__ == "__main__":
    sys.exit(main())
