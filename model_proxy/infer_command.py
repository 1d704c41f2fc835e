"""``model-proxy infer``: submit an inference job to the API, follow it on stderr, and write the
model's JSON (and, with ``--dicom-out``, the DICOM objects the job made)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from model_proxy.api_client import ApiClient, ApiError, JobResource
from model_proxy.command_support import (
    EXIT_API_ERROR,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    api_session,
    retry_hint,
    say,
)
from model_proxy.dicom_out import DicomOutError, prepare_directory, write_job_objects
from model_proxy.following import follow_events
from model_proxy.progress_view import ProgressView
from model_proxy.shared.jobs import JobError
from model_proxy.shared.settings import Settings

__all__ = ["run_infer"]

_RETRY_STATUSES = frozenset({429, 502, 503, 504})  # while polling: wait and ask again
_MAX_RETRIES = 10  # in a row


class _JobDidNotSucceed(Exception):
    """The job ended failed or cancelled, with its error."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


class _GaveUpWaiting(Exception):
    """``--timeout`` passed; the job goes on."""

    def __init__(self, job: JobResource) -> None:
        super().__init__(job.id)
        self.job = job


def run_infer(args: argparse.Namespace, settings: Settings) -> int:
    """Submit the job ``args`` describe, follow it, write its answer; the exit status."""
    view = ProgressView(sys.stderr, tty=sys.stderr.isatty())
    job_id: str | None = None
    if args.dicom_out is not None:
        try:
            prepare_directory(args.dicom_out)
        except DicomOutError as exc:
            say(str(exc))
            return EXIT_API_ERROR
    with api_session(args, settings) as client:
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
                say("answered from the cache")
                result = submitted
                job_id = getattr(submitted, "job_id", None)
            else:
                job_id = submitted.id
                say(f"job {job_id} submitted")
                result = _follow(client, submitted, view, args.poll, deadline)
            if args.dicom_out is not None:
                _write_objects(client, job_id, args.dicom_out)
        except KeyboardInterrupt:
            view.end()
            if job_id is None:
                say("interrupted")
            else:
                say(
                    f"interrupted; job {job_id} goes on. To cancel it: {_cancel_hint(args, job_id)}"
                )
            return EXIT_INTERRUPTED
        except _JobDidNotSucceed as failure:
            view.end()
            say(f"{failure.error.code}: {failure.error.message}")
            return EXIT_JOB_FAILED
        except _GaveUpWaiting as gave_up:
            view.end()
            job = gave_up.job
            say(
                f"timeout: job {job.id} is still {job.state} after {args.timeout:g} s and goes "
                f"on. To cancel it: {_cancel_hint(args, job.id)}"
            )
            return EXIT_TIMEOUT
        except ApiError as exc:
            view.end()
            say(f"{exc.code}: {exc.message}{retry_hint(exc)}")
            if job_id is not None:
                say(f"job {job_id} may go on; see: model-proxy jobs show {job_id}")
            return EXIT_API_ERROR
        except DicomOutError as exc:
            view.end()
            say(str(exc))
            return EXIT_API_ERROR
    view.end()
    return _write_result(result, args.output)


def _write_objects(client: ApiClient, job_id: str | None, directory: Path) -> None:
    """``--dicom-out``: the job's DICOM objects as files in ``directory``, each named on stderr."""
    if job_id is None:
        raise DicomOutError("the API did not name the job of its answer: no DICOM objects to fetch")
    written = write_job_objects(client, job_id, directory)
    for path in written:
        say(f"wrote {path}")
    if not written:
        say(f"job {job_id} made no DICOM object")


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
            say(f"cannot write {output}: {exc.strerror or exc}")
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
