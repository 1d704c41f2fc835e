"""``model-proxy infer`` and ``model-proxy jobs``: a client of a running model-proxy API.

These commands only talk HTTP to the API (``--api``, else ``MODEL_PROXY_API_URL``, else
http://127.0.0.1:8002); they need neither Redis nor the configuration files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from model_proxy.api_client import (
    TASK_ROUTES,
    ApiClient,
    ApiError,
    JobResource,
)
from model_proxy.dicom_out import DicomOutError, prepare_directory, write_job_objects
from model_proxy.following import follow_events
from model_proxy.progress_view import ProgressView, progress_line, progress_text
from model_proxy.shared.http import new_session
from model_proxy.shared.jobs import JOB_STATES, JobError
from model_proxy.shared.settings import Settings

__all__ = ["register_job_commands"]


_N = TypeVar("_N", int, float)

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_API_ERROR = 2
EXIT_TIMEOUT = 124  # as timeout(1): gave up waiting, the job goes on
EXIT_INTERRUPTED = 130

_HTTP_TIMEOUT = (10.0, 60.0)  # connect, read: per request, not for the whole job
_RETRY_STATUSES = frozenset({429, 502, 503, 504})  # while polling: wait and ask again
_MAX_RETRIES = 10  # in a row

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
        type=_json_array,
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
    _add_poll(infer)
    infer.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_non_negative_float,
        help="stop waiting after this long (default: wait until the job finishes)",
    )
    infer.set_defaults(run=_submit_inference)

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
        type=_positive_int,
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
    _add_poll(watch)
    watch.set_defaults(run=_watch_job)
    cancel = actions.add_parser("cancel", parents=[sub_api], help="cancel a job")
    cancel.add_argument("job_id", metavar="ID")
    cancel.set_defaults(run=_cancel_job)


def _add_poll(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--poll",
        metavar="SECONDS",
        type=_positive_float,
        default=0.5,
        help="how often to ask for the job's state when its events cannot be streamed "
        "(default %(default)s)",
    )


# --- argument types ----------------------------------------------------------------------------


def _json_array(text: str) -> list[object]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not JSON") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON array")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _non_negative_float(text: str) -> float:
    value = _converted(text, float, "a number")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number, 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = _converted(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _converted(text: str, convert: Callable[[str], _N], what: str) -> _N:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


# --- model-proxy infer -------------------------------------------------------------------------


class _JobDidNotSucceed(Exception):
    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


class _GaveUpWaiting(Exception):
    def __init__(self, job: JobResource) -> None:
        super().__init__(job.id)
        self.job = job


def _submit_inference(args: argparse.Namespace, settings: Settings) -> int:
    view = ProgressView(sys.stderr, tty=sys.stderr.isatty())
    job_id: str | None = None
    if args.dicom_out is not None:
        try:
            prepare_directory(args.dicom_out)
        except DicomOutError as exc:
            _say(str(exc))
            return EXIT_API_ERROR
    with _api_client(args, settings) as client:
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        try:
            submitted = client.submit(
                args.task,
                args.model,
                args.study,
                args.series,
                args.instance,
                server=args.server,
                data_filters=args.data_filters,
                fresh=args.no_cache,
            )
            if isinstance(submitted, bytes):
                _say("answered from the cache")
                result = submitted
                job_id = getattr(submitted, "job_id", None)
            else:
                job_id = submitted.id
                _say(f"job {job_id} submitted")
                result = _follow(client, submitted, view, args.poll, deadline)
            if args.dicom_out is not None:
                _write_objects(client, job_id, args.dicom_out)
        except KeyboardInterrupt:
            view.end()
            if job_id is None:
                _say("interrupted")
            else:
                _say(
                    f"interrupted; job {job_id} goes on. To cancel it: {_cancel_hint(args, job_id)}"
                )
            return EXIT_INTERRUPTED
        except _JobDidNotSucceed as failure:
            view.end()
            _say(f"{failure.error.code}: {failure.error.message}")
            return EXIT_JOB_FAILED
        except _GaveUpWaiting as gave_up:
            view.end()
            job = gave_up.job
            _say(
                f"timeout: job {job.id} is still {job.state} after {args.timeout:g} s and goes "
                f"on. To cancel it: {_cancel_hint(args, job.id)}"
            )
            return EXIT_TIMEOUT
        except ApiError as exc:
            view.end()
            _say(f"{exc.code}: {exc.message}{_retry_hint(exc)}")
            if job_id is not None:
                _say(f"job {job_id} may go on; see: model-proxy jobs show {job_id}")
            return EXIT_API_ERROR
        except DicomOutError as exc:
            view.end()
            _say(str(exc))
            return EXIT_API_ERROR
    view.end()
    return _write_result(result, args.output)


def _write_objects(client: ApiClient, job_id: str | None, directory: Path) -> None:
    """``--dicom-out``: the job's DICOM objects as files in ``directory``, each named on stderr."""
    if job_id is None:
        raise DicomOutError("the API did not name the job of its answer: no DICOM objects to fetch")
    written = write_job_objects(client, job_id, directory)
    for path in written:
        _say(f"wrote {path}")
    if not written:
        _say(f"job {job_id} made no DICOM object")


def _follow(
    client: ApiClient,
    job: JobResource,
    view: ProgressView,
    poll: float,
    deadline: float | None,
) -> bytes:
    """Wait for the job (following its events, else polling) and fetch its result;
    _JobDidNotSucceed or _GaveUpWaiting otherwise."""
    followed = follow_events(client, job, lambda _, current: view.show(current), deadline)
    job = followed or job
    while True:
        job = _wait_until_finished(client, job, view, poll, deadline)
        if job.state != "succeeded":
            default = f"job {job.id} was cancelled" if job.state == "cancelled" else "no reason"
            code = "job_cancelled" if job.state == "cancelled" else "job_failed"
            raise _JobDidNotSucceed(job.error or JobError(code=code, message=default))
        try:
            answer = client.result(job.id)
        except ApiError as exc:
            if exc.job_id is not None or exc.status == 410:  # it failed after all
                raise _JobDidNotSucceed(JobError(code=exc.code, message=exc.message)) from None
            raise
        if isinstance(answer, bytes):
            return answer
        job = answer  # no result yet after all: wait on
        _pause_within(poll, deadline, job)


def _wait_until_finished(
    client: ApiClient,
    job: JobResource,
    view: ProgressView,
    poll: float,
    deadline: float | None,
) -> JobResource:
    delay, retries = poll, 0
    while True:
        view.show(job)
        if job.finished:
            return job
        _pause_within(delay, deadline, job)
        try:
            job = client.job(job.id)
        except ApiError as exc:
            retries += 1
            if exc.status not in _RETRY_STATUSES or retries > _MAX_RETRIES:
                raise
            delay = max(poll, exc.retry_after or 0.0)
        else:
            delay, retries = poll, 0


def _pause_within(seconds: float, deadline: float | None, job: JobResource) -> None:
    if deadline is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _GaveUpWaiting(job)
        seconds = min(seconds, remaining)
    _pause(seconds)


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def _write_result(result: bytes, output: Path | None) -> int:
    if output is not None and str(output) != "-":
        try:
            output.write_bytes(result)
        except OSError as exc:
            _say(f"cannot write {output}: {exc.strerror or exc}")
            return EXIT_API_ERROR
        return EXIT_OK
    sys.stdout.flush()
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:  # a text-only stdout, as some embedding tools set
        sys.stdout.write(result.decode("utf-8", errors="replace"))
    else:
        binary.write(result)
        if sys.stdout.isatty() and not result.endswith(b"\n"):
            binary.write(b"\n")
        binary.flush()
    return EXIT_OK


def _cancel_hint(args: argparse.Namespace, job_id: str) -> str:
    api = f" --api {args.api}" if args.api else ""
    return f"model-proxy jobs cancel {job_id}{api}"


def _retry_hint(exc: ApiError) -> str:
    if exc.retry_after is None:
        return ""
    return f" (the API asks to try again in {exc.retry_after:g} s)"


# --- progress ----------------------------------------------------------------------------------


# --- model-proxy jobs --------------------------------------------------------------------------


def _list_jobs(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with _api_client(args, settings) as client:
            jobs = client.jobs(args.state, args.limit)
    except ApiError as exc:
        return _report(exc)
    if not jobs:
        _say("no jobs" if args.state is None else f"no {args.state} jobs")
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
        with _api_client(args, settings) as client:
            job = client.job(args.job_id)
            followed = follow_events(client, job, show)
            if followed is None or not followed.finished:
                job = _poll_lines(client, followed or job, args.poll, show)
            else:
                job = followed
    except ApiError as exc:
        return _report(exc)
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
        _pause(poll)
        job = client.job(job.id)


def _on_one_job(
    args: argparse.Namespace,
    settings: Settings,
    show: Callable[[JobResource], None],
    ask: Callable[[ApiClient], JobResource],
) -> int:
    """Ask the API about one job and show the answer, or report the API's error."""
    try:
        with _api_client(args, settings) as client:
            job = ask(client)
    except ApiError as exc:
        return _report(exc)
    show(job)
    return EXIT_OK


def _print_document(job: JobResource) -> None:
    print(json.dumps(job.document, indent=2, ensure_ascii=False))


def _print_state(job: JobResource) -> None:
    print(f"job {job.id} {job.state}")


@contextmanager
def _api_client(args: argparse.Namespace, settings: Settings) -> Iterator[ApiClient]:
    """A client of the API for one command, on a session of its own."""
    with new_session(pool_size=1, user_agent="model-proxy-cli") as session:
        if settings.api_key is not None:
            session.headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        yield ApiClient(_api_url(args, settings), session, _HTTP_TIMEOUT)


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


# --- shared by the commands --------------------------------------------------------------------


def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    """--api, else the setting MODEL_PROXY_API_URL (default http://127.0.0.1:8002)."""
    url: str = args.api or settings.api_url
    return url


def _report(exc: ApiError) -> int:
    _say(f"{exc.code}: {exc.message}{_retry_hint(exc)}")
    return EXIT_API_ERROR


def _say(message: str) -> None:
    print(f"model-proxy: {message}", file=sys.stderr, flush=True)
