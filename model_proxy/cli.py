"""``model-proxy``: the command line.

* ``model-proxy serve``: the API. Without ``MODEL_PROXY_REDIS_URL`` it also starts an embedded
  Redis (data in ``MODEL_PROXY_DATA_DIR``) and an in-process worker: everything on one machine.
* ``model-proxy worker``: a Celery worker on ``MODEL_PROXY_REDIS_URL`` (run any number, anywhere).
* ``model-proxy example-model``: the example model API that tests and the quickstart use.
* ``model-proxy keys add|list|revoke``: the API keys of ``MODEL_PROXY_API_KEYS_FILE``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from model_proxy.anonymous import credential_sources, decide_anonymous
from model_proxy.https import DEFAULT_CERT, DEFAULT_KEY, tls_files
from model_proxy.jobs_cli import register_job_commands
from model_proxy.shared.api_keys import ApiKeyFile
from model_proxy.shared.config import catalog_from_settings
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.jwks import JwtIssuer
from model_proxy.shared.settings import Settings, get_settings

__all__ = ["main"]

log = logging.getLogger("model_proxy")

DEFAULT_PORT = 8002


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic's ValidationError, worded for a person
        print(f"model-proxy: invalid environment setting: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    try:
        result: int = args.run(args, settings)
        return result
    except ConfigError as exc:
        print(f"model-proxy: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-proxy", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API (and, without a Redis URL, everything)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    serve.add_argument(
        "--anonymous",
        choices=["viewer", "none"],
        help="requests without credentials: viewer (allowed) or none (401); overrides "
        "MODEL_PROXY_ANONYMOUS, and one of the two is needed to listen beyond loopback",
    )
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", help="run a Celery worker on MODEL_PROXY_REDIS_URL")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default: the setting)")
    worker.add_argument(
        "--pool",
        choices=["prefork", "threads", "solo"],
        default="threads",
        help="Celery pool; jobs wait mostly on I/O, so threads suit them (default %(default)s)",
    )
    worker.add_argument(
        "--queues",
        help="comma-separated queues to consume (default: every queue of models.json); "
        "the webhook queue, MODEL_PROXY_WEBHOOK_QUEUE, is always consumed too",
    )
    worker.set_defaults(run=_worker)

    check = commands.add_parser(
        "check", help="validate servers.json and models.json and reach every server and model"
    )
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per check")
    check.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address serve will listen on, for its anonymous access (default %(default)s)",
    )
    check.set_defaults(run=_check)

    tls = commands.add_parser(
        "tls", help="write a self-signed certificate for local HTTPS (zhiva.crt, zhiva.key)"
    )
    tls.add_argument("--cert", type=Path, default=DEFAULT_CERT, help="default %(default)s")
    tls.add_argument("--key", type=Path, default=DEFAULT_KEY, help="default %(default)s")
    tls.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    tls.add_argument("--host", action="append", default=[], help="another name or address")
    tls.add_argument("--force", action="store_true", help="overwrite existing files")
    tls.set_defaults(run=_tls)

    example = commands.add_parser("example-model", help="run the example model API")
    example.add_argument("--host", default="127.0.0.1")
    example.add_argument("--port", type=int, default=8011)
    example.set_defaults(run=_example_model)

    keys = commands.add_parser("keys", help="API keys: add, list, revoke")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    add = key_commands.add_parser("add", help="create a key; it is printed once, on the last line")
    add.add_argument("name", help="who the key is for (unique)")
    add.add_argument("--role", choices=["viewer", "admin"], default="viewer")
    add.set_defaults(run=_keys_add)
    listing = key_commands.add_parser("list", help="names, roles and creation times")
    listing.set_defaults(run=_keys_list)
    revoke = key_commands.add_parser("revoke", help="revoke the key of NAME")
    revoke.add_argument("name")
    revoke.set_defaults(run=_keys_revoke)

    register_job_commands(commands)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from model_proxy.broker.app import create_app

    embedded = None
    worker = None
    redis_url = settings.redis_url
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so that the
    # embedded worker and Redis below are stopped too.
    signal.signal(signal.SIGTERM, _exit_gracefully)
    # Check the configuration before starting anything.
    if args.anonymous is not None:
        settings = settings.model_copy(update={"anonymous": args.anonymous})
    JwtIssuer.from_settings(settings)  # half an OIDC configuration stops the start here
    decision = decide_anonymous(settings, args.host)
    if decision.anonymous is None:
        print(f"model-proxy: {decision.reason}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"anonymous": decision.anonymous})
    if decision.anonymous == "viewer" and (sources := credential_sources(settings)):
        log.warning(
            "anonymous access is viewer although %s configured: requests without credentials "
            "are answered too; set MODEL_PROXY_ANONYMOUS=none if only credential holders may ask",
            " and ".join(sources),
        )
    catalog = catalog_from_settings(settings)
    tls = tls_files(settings)
    try:
        if redis_url is None:
            from model_proxy.embedded_redis import EmbeddedRedis
            from model_proxy.embedded_worker import InProcessWorker
            from model_proxy.workers.app import create_worker_app, worker_queues

            embedded = EmbeddedRedis(settings.data_dir)
            redis_url = embedded.start()
            log.info("no MODEL_PROXY_REDIS_URL: embedded Redis and an in-process worker")
            worker = InProcessWorker(
                create_worker_app(settings, redis_url),
                worker_queues(settings, catalog.queues(settings.queue_name)),
                settings.worker_concurrency,
            )
            worker.start()
        app = create_app(settings, redis_url=redis_url)
        if tls is None:
            log.info(
                "serving over plain HTTP on http://%s:%d (no zhiva.crt/zhiva.key)",
                args.host,
                args.port,
            )
        else:
            log.info("serving over HTTPS on https://%s:%d with %s", args.host, args.port, tls.cert)
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            access_log=False,
            log_config=None,
            # the client address is the connection's peer: X-Forwarded-For, which any client can
            # send, must not choose whose jobs and quota an anonymous caller has
            proxy_headers=False,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
        )
    finally:
        if worker is not None:
            worker.stop()
        if embedded is not None:
            embedded.stop()
    return 0


def _exit_gracefully(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from celery.bin.celery import celery as celery_command

    from model_proxy.workers.app import create_worker_app, worker_queues

    if settings.redis_url is None:
        raise ConfigError(
            "model-proxy worker needs MODEL_PROXY_REDIS_URL (the Redis the API uses); "
            "without it, `model-proxy serve` runs a worker of its own"
        )
    catalog = catalog_from_settings(settings)
    asked = args.queues.split(",") if args.queues else catalog.queues(settings.queue_name)
    queues = ",".join(worker_queues(settings, asked))
    concurrency = args.concurrency or settings.worker_concurrency
    # the connection pools are sized from the setting: make it the concurrency actually run
    redis_url = settings.redis_url
    settings = settings.model_copy(update={"worker_concurrency": concurrency})
    app = create_worker_app(settings, redis_url)
    # Celery's own command line, as ``app.start`` runs it, but keeping the worker's exit
    # status (``start`` drops it): a worker that stops on an unrecoverable error (Celery's
    # consumer can give up on a lost broker connection) exits with a failure, so that its
    # supervisor starts it again
    celery_command.params[0].default = app
    try:
        status = celery_command.main(
            args=[
                "worker",
                f"--loglevel={settings.log_level.upper()}",
                f"--concurrency={concurrency}",
                f"--pool={args.pool}",
                f"--queues={queues}",
                "--without-mingle",
                "--without-gossip",
            ],
            standalone_mode=False,
        )
    finally:
        celery_command.params[0].default = None
    return int(status or 0)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from model_proxy.check import run_check

    return run_check(settings, args.timeout, sys.stdout, args.host)


def _tls(args: argparse.Namespace, settings: Settings) -> int:
    from model_proxy.tls import local_hosts, write_self_signed

    existing = [path for path in (args.cert, args.key) if path.exists()]
    if existing and not args.force:
        names = ", ".join(str(path) for path in existing)
        print(f"model-proxy: {names} already exist; --force replaces them", file=sys.stderr)
        return 2
    hosts = [*local_hosts(), *args.host]
    write_self_signed(args.cert, args.key, hosts, days=args.days)
    print(
        f"wrote {args.cert} and {args.key} (self-signed, {args.days} days) for: " + ", ".join(hosts)
    )
    return 0


def _keys_add(args: argparse.Namespace, settings: Settings) -> int:
    entry, key = ApiKeyFile(settings.api_keys_file).add(args.name, args.role)
    print(
        f"created the {entry.role} key {entry.name!r} in {settings.api_keys_file}; "
        "it is shown this once and stored only as a hash:"
    )
    print(key)
    return 0


def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    entries = ApiKeyFile(settings.api_keys_file).load()
    if not entries:
        print(f"no API keys in {settings.api_keys_file}")
        return 0
    width = max(len("NAME"), *(len(entry.name) for entry in entries))
    print(f"{'NAME':<{width}}  {'ROLE':<6}  CREATED")
    for entry in entries:
        print(f"{entry.name:<{width}}  {entry.role:<6}  {entry.created}")
    return 0


def _keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    ApiKeyFile(settings.api_keys_file).revoke(args.name)
    print(f"revoked the key {args.name!r}; the API stops accepting it within seconds")
    return 0


def _example_model(args: argparse.Namespace, settings: Settings) -> int:
    from model_proxy.example_model.server import run

    run(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
