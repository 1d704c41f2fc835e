"""The real parts the benchmark drives, each in its own process, in one temporary directory.

A real Orthanc (loaded with generated CT series), a real Redis, the sink model
(:mod:`bench.sink_model`), the example model, the API served by uvicorn
(``python -m model_proxy serve`` with a Redis URL: the API only) and real worker processes
(``python -m model_proxy worker``), started and stopped as the rows need them.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from devtools.dicom import ct_series
from devtools.orthanc import OrthancServer
from devtools.processes import ManagedProcess, free_port
from devtools.redis_server import RedisServer

__all__ = ["ModelKey", "Series", "Stack"]

ROOT = Path(__file__).resolve().parent.parent
STUDY_UID = "1.2.826.0.1.3680043.8.498.7070.1"
_PASSWORD_ENV = "BENCH_PACS_PASSWORD"
_NAMES = uuid.UUID("6b0f5a52-8a51-4c52-9a55-1f1f8e6c0b7e")


def _key(name: str) -> str:
    return str(uuid.uuid5(_NAMES, name))


class ModelKey:
    """models.json keys of the benchmark's models, all but one backed by the sink."""

    SINK = _key("sink")  # the default queue; synchronous runs and cached answers
    DELAY = _key("delay")  # a model that takes a while, on its own queue
    EXAMPLE = _key("example")  # the example model, which decodes every instance
    EXAMPLE_JSON = _key("example-json")  # its prediction, with the JSON body
    EXAMPLE_MULTIPART = _key("example-multipart")  # the same, with the multipart transport
    SHARED_ONE = _key("shared-one")  # one request, the baseline of identical requests at once
    MASK_GZIP = _key("mask-gzip")  # answers a segmentation mask; its workers store it gzipped
    MASK_PLAIN = _key("mask-plain")  # the same; its workers store it uncompressed

    @staticmethod
    def shared(run: int) -> str:
        """Identical requests at once: a model never asked before in each run."""
        return _key(f"shared-{run}")

    @staticmethod
    def rss(slices: int) -> str:
        return _key(f"rss-{slices}")


SERVER_KEY = _key("pacs")
DELAY_QUEUE = "bench-delay"
GZIP_QUEUE = "bench-gzip"
PLAIN_QUEUE = "bench-plain"


def rss_queue(slices: int) -> str:
    return f"bench-rss-{slices}"


@dataclass(frozen=True)
class Series:
    study_uid: str
    series_uid: str
    instance_uids: tuple[str, ...]

    @property
    def slices(self) -> int:
        return len(self.instance_uids)


def _answers(url: str) -> bool:
    return requests.get(url, timeout=1).ok


def _worker_ready(process: ManagedProcess) -> bool:
    return " ready." in process.log_text()


def _wait_ready(process: ManagedProcess, check: Callable[[], bool]) -> None:
    process.wait_ready(check, 120, process.name)


class Stack:
    """Start with :meth:`start`, always :meth:`stop` (it stops whatever was started)."""

    def __init__(
        self,
        workdir: Path,
        model_delay: float,
        rss_sizes: Sequence[int],
        shared_runs: int,
        shared_delay: float,
        answer_shape: tuple[int, int, int] = (1, 1, 1),
    ) -> None:
        """``answer_shape``: slices, rows and columns of the mask models' answers."""
        self.workdir = workdir
        self.answer_shape = answer_shape
        self.model_delay = model_delay
        self.shared_delay = shared_delay
        self.rss_sizes = tuple(rss_sizes)
        self.shared_runs = shared_runs
        self._processes: list[ManagedProcess] = []
        self._orthanc: OrthancServer | None = None
        self._redis: RedisServer | None = None
        self.sink_url = ""
        self.example_url = ""
        self.api_url = ""
        self.environ: dict[str, str] = {}
        self._api: ManagedProcess | None = None

    @property
    def orthanc(self) -> OrthancServer:
        assert self._orthanc is not None, "start() first"
        return self._orthanc

    @property
    def api_process(self) -> ManagedProcess:
        assert self._api is not None, "start() first"
        return self._api

    @property
    def redis(self) -> RedisServer:
        assert self._redis is not None, "start() first"
        return self._redis

    # --- starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        sink_port, example_port = free_port(), free_port()
        self.sink_url = f"http://127.0.0.1:{sink_port}"
        self.example_url = f"http://127.0.0.1:{example_port}"
        python = sys.executable
        sink = self._spawn(
            "sink-model", [python, "-m", "bench.sink_model", "--port", str(sink_port)]
        )
        example = self._spawn(
            "example-model",
            [python, "-m", "model_proxy.example_model", "--port", str(example_port)],
        )
        self._orthanc = OrthancServer(self.workdir / "orthanc")
        self._redis = RedisServer(self.workdir / "redis")
        for process, url in ((sink, self.sink_url), (example, self.example_url)):
            _wait_ready(process, functools.partial(_answers, f"{url}/health"))
        self._write_configs()
        self.environ = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            _PASSWORD_ENV: self.orthanc.password,
            "MODEL_PROXY_REDIS_URL": self.redis.url,
            "MODEL_PROXY_SERVERS_FILE": str(self.workdir / "servers.json"),
            "MODEL_PROXY_MODELS_FILE": str(self.workdir / "models.json"),
            "MODEL_PROXY_LOG_LEVEL": "INFO",
            # every bench client is one anonymous address: the per-caller quota is not measured
            "MODEL_PROXY_MAX_QUEUED_PER_CLIENT": "0",
        }
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        api = self._spawn(
            "api", [python, "-m", "model_proxy", "serve", "--port", str(api_port)], self.environ
        )
        _wait_ready(api, functools.partial(_answers, f"{self.api_url}/readyz"))
        self._api = api

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        for server in (self._redis, self._orthanc):
            if server is not None:
                server.stop()
        self._redis = self._orthanc = None
        self._api = None

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        environ = env or {**os.environ, "PYTHONPATH": str(ROOT)}
        process = ManagedProcess(
            name, argv, self.workdir / f"{name}.log", env=environ, cwd=self.workdir
        )
        self._processes.append(process)
        return process

    @contextmanager
    def workers(
        self, queues: str, concurrencies: Iterable[int], settings: dict[str, str] | None = None
    ) -> Iterator[list[ManagedProcess]]:
        """Fresh ``model-proxy worker`` processes on ``queues``, started side by side, with
        ``settings`` (``MODEL_PROXY_*`` variables) added to their environment."""
        started = [
            self._spawn(
                f"worker-{queues}-{index}-{uuid.uuid4().hex[:6]}",
                [
                    sys.executable,
                    "-m",
                    "model_proxy",
                    "worker",
                    f"--concurrency={concurrency}",
                    f"--queues={queues}",
                ],
                {**self.environ, **(settings or {})},
            )
            for index, concurrency in enumerate(concurrencies)
        ]
        try:
            for process in started:
                _wait_ready(process, functools.partial(_worker_ready, process))
            yield started
        finally:
            for process in started:
                process.stop()
                self._processes.remove(process)

    # --- configuration -----------------------------------------------------------------------

    def _write_configs(self) -> None:
        orthanc = self.orthanc
        servers = {
            SERVER_KEY: {
                "uri": orthanc.dicomweb,
                "isDefault": True,
                "authType": "basicAuth",
                "login": orthanc.user,
                "password": "${" + _PASSWORD_ENV + "}",
            }
        }
        levels = ["/studies/series", "/studies/series/instances"]
        sink = f"{self.sink_url}/infer"
        models: dict[str, dict[str, object]] = {
            ModelKey.SINK: {"uri": f"{sink}?tag=sync", "task": "segmentation", "supports": levels},
            ModelKey.DELAY: {
                "uri": f"{sink}?tag=delay&delay={self.model_delay}",
                "task": "segmentation",
                "supports": levels,
                "queue": DELAY_QUEUE,
            },
            ModelKey.EXAMPLE: {
                "uri": f"{self.example_url}/segmentation",
                "task": "segmentation",
                "supports": levels,
            },
        }
        for key, transport in (
            (ModelKey.EXAMPLE_JSON, "json"),
            (ModelKey.EXAMPLE_MULTIPART, "multipart"),
        ):
            models[key] = {
                "uri": f"{self.example_url}/prediction",
                "task": "prediction",
                "supports": levels,
                "transport": transport,
            }
        slices, rows, columns = self.answer_shape
        mask = f"answer=mask&slices={slices}&rows={rows}&columns={columns}"
        for key, queue in ((ModelKey.MASK_GZIP, GZIP_QUEUE), (ModelKey.MASK_PLAIN, PLAIN_QUEUE)):
            models[key] = {
                "uri": f"{sink}?tag={queue}&{mask}",
                "task": "segmentation",
                "supports": levels,
                "queue": queue,
            }
        shared = {ModelKey.SHARED_ONE: "shared-one"}
        shared |= {ModelKey.shared(run): f"shared-{run}" for run in range(self.shared_runs)}
        for key, tag in shared.items():
            models[key] = {
                "uri": f"{sink}?tag={tag}&delay={self.shared_delay}",
                "task": "segmentation",
                "supports": levels,
            }
        for slices in self.rss_sizes:
            models[ModelKey.rss(slices)] = {
                "uri": f"{sink}?tag=rss-{slices}",
                "task": "segmentation",
                "supports": levels,
                "queue": rss_queue(slices),
            }
        (self.workdir / "servers.json").write_text(json.dumps(servers, indent=2))
        (self.workdir / "models.json").write_text(json.dumps(models, indent=2))

    # --- data and requests -------------------------------------------------------------------

    def load_series(self, slices: int, rows: int, columns: int, seed: int) -> Series:
        """Generate a CT series and store it in Orthanc (4 uploads at a time)."""
        files = ct_series(study_uid=STUDY_UID, slices=slices, rows=rows, columns=columns, seed=seed)
        self.orthanc.upload_many(item.data for item in files)
        return Series(
            files[0].study_uid, files[0].series_uid, tuple(item.sop_uid for item in files)
        )

    def series_url(self, model: str, series: Series, route: str = "segmentations") -> str:
        return (
            f"{self.api_url}/{route}/{model}/studies/{series.study_uid}/series/{series.series_uid}"
        )

    def instance_url(self, model: str, series: Series, index: int) -> str:
        return f"{self.series_url(model, series)}/instances/{series.instance_uids[index]}"

    def sink_calls(self, tag: str) -> int:
        counts = requests.get(f"{self.sink_url}/calls", timeout=10).json()
        return int(counts["calls"].get(tag, 0))

    def sink_bytes_per_call(self, tag: str) -> float:
        """The mean body size the sink read for ``tag``."""
        counts = requests.get(f"{self.sink_url}/calls", timeout=10).json()
        return int(counts["bytes"].get(tag, 0)) / max(int(counts["calls"].get(tag, 0)), 1)

    def job_count(self, model: str) -> int:
        """Jobs of ``model`` that workers finished, from the shared metrics in Redis."""
        from model_proxy.shared.metrics import counter_key, parse_label_field

        client = self.redis.client()
        try:
            stored = client.hgetall(counter_key("model-proxy", "jobs"))
        finally:
            client.close()
        total = 0.0
        for field, value in stored.items():
            labels = parse_label_field(field.decode() if isinstance(field, bytes) else field)
            if labels and labels[0] == model:
                total += float(value)
        return int(total)
