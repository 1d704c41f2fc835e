"""How the CLI shows a job's state and progress on a terminal: a bar redrawn in place, or a
line per state when the output is not a terminal."""

from __future__ import annotations

from typing import TextIO

from model_proxy.api_client import JobProgress, JobResource

__all__ = ["ProgressView", "progress_line", "progress_text"]

_BAR_WIDTH = 24


class ProgressView:
    """A job's state and progress: one line redrawn on a terminal, else a line per state."""

    def __init__(self, stream: TextIO, *, tty: bool, width: int = _BAR_WIDTH) -> None:
        self._stream = stream
        self._tty = tty
        self._width = width
        self._state: str | None = None
        self._line = ""

    def show(self, job: JobResource) -> None:
        line = progress_line(job, self._width)
        if self._tty:
            if line != self._line:
                padding = " " * max(len(self._line) - len(line), 0)
                self._stream.write(f"\r{line}{padding}")
                self._stream.flush()
                self._line = line
        elif job.state != self._state:
            self._stream.write(line + "\n")
            self._stream.flush()
        self._state = job.state

    def end(self) -> None:
        """Finish a redrawn line, so that what follows starts on a line of its own."""
        if self._tty and self._line:
            self._stream.write("\n")
            self._stream.flush()
        self._line = ""


def progress_line(job: JobResource, width: int = _BAR_WIDTH) -> str:
    """``fetching  [######------------------] 3/10 instances``: state, bar when a total is known."""
    progress = job.progress
    done, total = _measure(progress)
    bar = ""
    if total:
        filled = min(max(round(width * done / total), 0), width)
        bar = "[" + "#" * filled + "-" * (width - filled) + "]"
    attempt = f" (attempt {job.attempts})" if job.attempts > 1 else ""
    parts = [f"{job.state:<9}", bar, progress_text(progress)]
    return " ".join(part for part in parts if part).rstrip() + attempt


def _measure(progress: JobProgress) -> tuple[int, int | None]:
    if progress.instances_total:
        return progress.instances_fetched, progress.instances_total
    if progress.bytes_total:
        return progress.bytes_fetched, progress.bytes_total
    return 0, None


def progress_text(progress: JobProgress) -> str:
    """``3/10 instances``, ``1.2 MB of 4.0 MB``, or what was fetched when no total is known."""
    if progress.instances_total:
        return f"{progress.instances_fetched}/{progress.instances_total} instances"
    if progress.bytes_total:
        return f"{_size(progress.bytes_fetched)} of {_size(progress.bytes_total)}"
    if progress.bytes_fetched or progress.instances_fetched:
        return f"{progress.instances_fetched} instances, {_size(progress.bytes_fetched)}"
    return ""


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
