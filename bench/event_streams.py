"""Many open event streams on one API process: do they all stay open, and what do they cost?

``python -m bench.event_streams --api http://127.0.0.1:8002 --job ID --pid PID --streams 1000
--seconds 30``: opens ``--streams`` connections to ``GET /jobs/{ID}/events`` (raw asyncio
sockets, no client library's overhead), keeps them ``--seconds``, and prints the API process's
resident memory (``/proc/PID/status``) before, with all open, and per stream. The job should
stay unfinished meanwhile (a job of a model no worker serves); with ``--cancel`` the job is then
cancelled and every stream must receive its ``end`` event and close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["StreamHolder", "StreamWatch", "main", "rss_kib"]


def rss_kib(pid: int) -> int:
    """The resident memory of process ``pid`` in KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class StreamWatch:
    """What the streams saw: how many answered 200 with the event stream, their first event
    kinds, how many closed before ``closed_early`` was no longer counted, how many received an
    ``end`` event, and the other statuses answered."""

    opened: int = 0
    first_events: list[str] = field(default_factory=list)
    closed_early: int = 0
    ended: int = 0
    refused: list[int] = field(default_factory=list)


async def _one_stream(
    host: str, port: int, path: str, watch: StreamWatch, holding: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if status != 200:
            watch.refused.append(status)
            return
        watch.opened += 1
        first = True
        while line := await reader.readline():
            if line.startswith(b"event: "):
                kind = line[7:].strip().decode()
                if first:
                    watch.first_events.append(kind)
                    first = False
                if kind == "end":
                    watch.ended += 1
        if holding.is_set():
            watch.closed_early += 1
    finally:
        writer.close()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(writer.wait_closed(), 1)


class StreamHolder:
    """Open streams on one API process; ``await holder.wait()`` once the job has ended."""

    def __init__(self, api: str, job_id: str) -> None:
        parts = urlsplit(api)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = f"/jobs/{job_id}/events"
        self.watch = StreamWatch()
        self._holding = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self, streams: int, batch: int = 100) -> None:
        """Open ``streams`` connections, ``batch`` at a time, and wait until each answered."""
        self._holding.set()
        for start in range(0, streams, batch):
            for _ in range(min(batch, streams - start)):
                coroutine = _one_stream(
                    self._host, self._port, self._path, self.watch, self._holding
                )
                self._tasks.append(asyncio.create_task(coroutine))
            wanted = min(start + batch, streams)
            while len(self.watch.first_events) + len(self.watch.refused) < wanted:
                await asyncio.sleep(0.02)

    async def wait(self, timeout: float = 30.0) -> StreamWatch:
        """Stop counting closes as early, and wait for every stream to close."""
        self._holding.clear()
        await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)
        return self.watch


def _cancel(api: str, job_id: str) -> None:
    request = urllib.request.Request(f"{api}/jobs/{job_id}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


async def _main(args: argparse.Namespace) -> int:
    before = rss_kib(args.pid) if args.pid else None
    holder = StreamHolder(args.api, args.job)
    started = time.monotonic()
    await holder.open(args.streams)
    opened = time.monotonic() - started
    await asyncio.sleep(args.seconds)
    during = rss_kib(args.pid) if args.pid else None
    report: dict[str, object] = {
        "streams": args.streams,
        "opened": holder.watch.opened,
        "refused": len(holder.watch.refused),
        "open_seconds": round(opened, 2),
        "held_seconds": args.seconds,
        "closed_early": holder.watch.closed_early,
    }
    if before is not None and during is not None:
        report |= {
            "rss_before_mib": round(before / 1024, 1),
            "rss_open_mib": round(during / 1024, 1),
            "kib_per_stream": round((during - before) / max(holder.watch.opened, 1), 1),
        }
    if args.cancel:
        await asyncio.to_thread(_cancel, args.api, args.job)
        watch = await holder.wait()
        report["ended"] = watch.ended
    print(json.dumps(report, indent=2))
    return 0 if holder.watch.closed_early == 0 and not holder.watch.refused else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, help="the API, e.g. http://127.0.0.1:8002")
    parser.add_argument("--job", required=True, help="an unfinished job's id")
    parser.add_argument("--pid", type=int, help="the API process, for its memory")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cancel", action="store_true", help="cancel the job at the end")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
