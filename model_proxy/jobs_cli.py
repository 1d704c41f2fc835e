"""``model-proxy infer`` and ``model-proxy jobs``: a client of a running model-proxy API.

These commands only talk HTTP to the API (``--api``, else ``MODEL_PROXY_API_URL``, else
http://127.0.0.1:8002); they need neither Redis nor the configuration files. ``infer`` runs in
:mod:`model_proxy.infer_command`; ``jobs`` lists, shows, watches and cancels jobs here.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from model_proxy.api_client import TASK_ROUTES, ApiClient, ApiError, JobResource
from model_proxy.command_support import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    add_poll,
    api_session,
    json_array,
    non_negative_float,
    positive_int,
    report,
    say,
)
from model_proxy.following import follow_events
from model_proxy.infer_command import run_infer
from model_proxy.progress_view import progress_line, progress_text
from model_proxy.shared.jobs import JOB_STATES
from model_proxy.shared.settings import Settings

__all__ = ["register_job_commands"]

_EPILOG = (
    "exit status: 0 the result was written; 1 the job failed or was cancelled; 2 a usage or API "
    "error; 124 --timeout passed (the job goes on); 130 interrupted (the job goes on)"
)


def register_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``infer`` and ``jobs`` to the ``model-proxy`` command."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--api",
        metavar="URL",
        help="the model-proxy API (default: $MODEL_PROXY_API_URL, else http://127.0.0.1:8002)",
    )

    infer = commands.add_parser(
        "infer",
        parents=[api],
        help="run a model on a study, series or instance through the API and print its JSON",
        description="Submit an inference job, follow it on stderr, and write the model's JSON.",
        epilog=_EPILOG,
    )
    infer.add_argument("model", metavar="MODEL", help="the model's key")
    infer.add_argument("study", metavar="STUDY", help="StudyInstanceUID")
    infer.add_argument("series", metavar="SERIES", nargs="?", help="SeriesInstanceUID")
    infer.add_argument("instance", metavar="INSTANCE", nargs="?", help="SOPInstanceUID")
    infer.add_argument("--task", choices=list(TASK_ROUTES), default="segmentation")
    infer.add_argument("--server", metavar="KEY", help="the PACS (default: the API's default)")
    infer.add_argument(
        "--data-filters",
        metavar="JSON",
        type=json_array,
        help='a JSON array, e.g. \'[{"dataKey": "series-one", "uuid": "1.2.3"}]\'',
    )
    infer.add_argument(
        "--no-cache", action="store_true", help="run the model again instead of a cached answer"
    )
    infer.add_argument(
        "-o", "--output", metavar="FILE", type=Path, help="write the JSON here (default: stdout)"
    )
    infer.add_argument(
        "--dicom-out",
        metavar="DIR",
        type=Path,
        help="also write the DICOM objects the job made (SEG, SR) as DIR/<SOPInstanceUID>.dcm",
    )
    add_poll(infer)
    infer.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=non_negative_float,
        help="stop waiting after this long (default: wait until the job finishes)",
    )
    infer.set_defaults(run=run_infer)

    jobs = commands.add_parser(
        "jobs",
        parents=[api],
        help="list recent jobs; show or cancel one",
        description="Without show or cancel: a table of recent jobs, newest first.",
        epilog="exit status: 0 done; 2 a usage or API error (such as an unknown job)",
    )
    jobs.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    jobs.add_argument(
        "--limit",
        metavar="N",
        type=positive_int,
        default=20,
        help="at most this many (default %(default)s)",
    )
    jobs.set_defaults(run=_list_jobs)
    # --api after the subcommand too; SUPPRESS keeps one given before it.
    sub_api = argparse.ArgumentParser(add_help=False)
    sub_api.add_argument("--api", metavar="URL", default=argparse.SUPPRESS, help="as above")
    actions = jobs.add_subparsers(dest="jobs_command", metavar="{show,watch,cancel}")
    show = actions.add_parser("show", parents=[sub_api], help="a job's full record as JSON")
    show.add_argument("job_id", metavar="ID")
    show.set_defaults(run=_show_job)
    watch = actions.add_parser(
        "watch",
        parents=[sub_api],
        help="print a line per event of a job until it ends",
        description="Follow a job's events (polling when they cannot be streamed), one line "
        "each, until it ends.",
        epilog="exit status: 0 the job succeeded; 1 it failed or was cancelled; 2 a usage or "
        "API error (such as an unknown job)",
    )
    watch.add_argument("job_id", metavar="ID")
    add_poll(watch)
    watch.set_defaults(run=_watch_job)
    cancel = actions.add_parser("cancel", parents=[sub_api], help="cancel a job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.set_defaults(run=_cancel_job)


# --- model-proxy jobs --------------------------------------------------------------------------


def _list_jobs(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with api_session(args, settings) as client:
            jobs = client.jobs(args.state, args.limit)
    except ApiError as exc:
        return report(exc)
    if not jobs:
        say("no jobs" if args.state is None else f"no {args.state} jobs")
        return EXIT_OK
    header = ("ID", "STATE", "TASK", "MODEL", "LEVEL", "PROGRESS", "CREATED")
    rows = [
        (
            job.id,
            job.state,
            job.request.task,
            job.request.model,
            job.request.level,
            progress_text(job.progress) or "-",
            _timestamp(job.created_at),
        )
        for job in jobs
    ]
    print(_format_table(header, rows))
    return EXIT_OK


def _show_job(args: argparse.Namespace, settings: Settings) -> int:
    return _on_one_job(args, settings, _print_document, lambda client: client.job(args.job_id))


def _cancel_job(args: argparse.Namespace, settings: Settings) -> int:
    return _on_one_job(args, settings, _print_state, lambda client: client.cancel(args.job_id))


def _watch_job(args: argparse.Namespace, settings: Settings) -> int:
    """A line per event (``<kind> <state> [bar] progress``); polled lines are named ``poll``."""

    def show(kind: str, job: JobResource) -> None:
        print(f"{kind:<8} {progress_line(job)}", flush=True)

    try:
        with api_session(args, settings) as client:
            job = client.job(args.job_id)
            followed = follow_events(client, job, show)
            if followed is None or not followed.finished:
                job = _poll_lines(client, followed or job, args.poll, show)
            else:
                job = followed
    except ApiError as exc:
        return report(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK if job.state == "succeeded" else EXIT_JOB_FAILED


def _poll_lines(
    client: ApiClient, job: JobResource, poll: float, show: Callable[[str, JobResource], None]
) -> JobResource:
    """Poll until the job has finished, showing it whenever its line changes."""
    shown = ""
    while True:
        line = progress_line(job)
        if line != shown:
            show("poll", job)
            shown = line
        if job.finished:
            return job
        time.sleep(poll)
        job = client.job(job.id)


def _on_one_job(
    args: argparse.Namespace,
    settings: Settings,
    show: Callable[[JobResource], None],
    ask: Callable[[ApiClient], JobResource],
) -> int:
    """Ask the API about one job and show the answer, or report the API's error."""
    try:
        with api_session(args, settings) as client:
            job = ask(client)
    except ApiError as exc:
        return report(exc)
    show(job)
    return EXIT_OK


def _print_document(job: JobResource) -> None:
    print(json.dumps(job.document, indent=2, ensure_ascii=False))


def _print_state(job: JobResource) -> None:
    print(f"job {job.id} {job.state}")


def _format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _timestamp(value: str) -> str:
    """An ISO-8601 time as ``2024-05-01 12:03:04Z``, or as given when it is not one."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return value or "-"
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%SZ")
