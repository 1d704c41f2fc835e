"""What the API client commands (``infer``, ``jobs``) share: exit statuses, the API session,
messages on stderr, and argument types."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from model_proxy.api_client import ApiClient, ApiError
from model_proxy.shared.http import new_session
from model_proxy.shared.settings import Settings

__all__ = [
    "EXIT_API_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "add_poll",
    "api_session",
    "json_array",
    "non_negative_float",
    "positive_float",
    "positive_int",
    "report",
    "retry_hint",
    "say",
]

_N = TypeVar("_N", int, float)

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_API_ERROR = 2
EXIT_TIMEOUT = 124  # as timeout(1): gave up waiting, the job goes on
EXIT_INTERRUPTED = 130

_HTTP_TIMEOUT = (10.0, 60.0)  # connect, read: per request, not for the whole job


@contextmanager
def api_session(args: argparse.Namespace, settings: Settings) -> Iterator[ApiClient]:
    """A client of the API for one command, on a session of its own."""
    with new_session(pool_size=1, user_agent="model-proxy-cli") as session:
        if settings.api_key is not None:
            session.headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        yield ApiClient(_api_url(args, settings), session, _HTTP_TIMEOUT)


def _api_url(args: argparse.Namespace, settings: Settings) -> str:
    """--api, else the setting MODEL_PROXY_API_URL (default http://127.0.0.1:8002)."""
    url: str = args.api or settings.api_url
    return url


def report(exc: ApiError) -> int:
    """Say the API's error on stderr; the exit status of an API error."""
    say(f"{exc.code}: {exc.message}{retry_hint(exc)}")
    return EXIT_API_ERROR


def say(message: str) -> None:
    """A line for the user on stderr (stdout carries only results)."""
    print(f"model-proxy: {message}", file=sys.stderr, flush=True)


def retry_hint(exc: ApiError) -> str:
    """`` (the API asks to try again in N s)`` when the API said when, else nothing."""
    if exc.retry_after is None:
        return ""
    return f" (the API asks to try again in {exc.retry_after:g} s)"


def add_poll(parser: argparse.ArgumentParser) -> None:
    """``--poll SECONDS``: how often to ask for a job whose events cannot be streamed."""
    parser.add_argument(
        "--poll",
        metavar="SECONDS",
        type=positive_float,
        default=0.5,
        help="how often to ask for the job's state when its events cannot be streamed "
        "(default %(default)s)",
    )


def json_array(text: str) -> list[object]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not JSON") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("must be a JSON array")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _converted(text, float, "a number")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number, 0 or more")
    return value


def positive_int(text: str) -> int:
    value = _converted(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _converted(text: str, convert: Callable[[str], _N], what: str) -> _N:
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
