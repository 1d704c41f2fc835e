"""A private Orthanc with its DICOMweb plugin, on a free loopback port, with basic auth."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from devtools.processes import ManagedProcess, ensure_port_free, free_port, require_binary

__all__ = ["ORTHANC_PLUGIN", "OrthancServer"]

ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancServer:
    """Orthanc on ``port`` (a free one when not given), its data and log in ``workdir``.

    A fixed ``port`` that is taken raises :class:`~devtools.errors.PortInUseError` before
    Orthanc starts, so that another Orthanc on it is never mistaken for this one.
    """

    def __init__(
        self,
        workdir: Path,
        user: str = "pacs-reader",
        password: str = "pacs-Secret-9f2",
        port: int | None = None,
    ) -> None:
        binary = require_binary("/usr/sbin/Orthanc", "orthanc")
        require_binary(ORTHANC_PLUGIN, "orthanc-dicomweb")
        self.user = user
        self.password = password
        if port:
            ensure_port_free(port, "Orthanc")
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dicomweb = f"{self.base}/dicom-web"
        storage = workdir / "db"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "model-proxy-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "Plugins": [ORTHANC_PLUGIN],
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {user: password},
            "HttpCompressionEnabled": False,
            "HttpDescribeErrors": True,
            "KeepAlive": True,
            "TcpNoDelay": True,
            "HttpThreadsCount": 20,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Host": f"127.0.0.1:{self.port}",
                "Ssl": False,
            },
        }
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.process = ManagedProcess(
            "orthanc", [binary, str(config_path)], workdir / "orthanc.log"
        )
        self.process.wait_ready(
            lambda: self.session.get(f"{self.base}/system", timeout=1).ok, 30, "Orthanc"
        )

    def upload(self, data: bytes, session: requests.Session | None = None) -> None:
        response = (session or self.session).post(
            f"{self.base}/instances",
            data=data,
            headers={"Content-Type": "application/dicom"},
            timeout=60,
        )
        response.raise_for_status()

    def upload_many(self, files: Iterable[bytes], parallel: int = 4) -> None:
        """Store DICOM files ``parallel`` at a time, each thread with its own session."""
        local = threading.local()

        def upload(data: bytes) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.auth = (self.user, self.password)
            self.upload(data, local.session)

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(upload, files))

    def instance_bytes(self, study: str, series: str, sop: str) -> bytes:
        """The Part-10 file Orthanc holds for this instance, looked up through its REST API."""
        found = self.session.post(f"{self.base}/tools/lookup", data=sop, timeout=10).json()
        orthanc_id = next(item["ID"] for item in found if item["Type"] == "Instance")
        return self.session.get(f"{self.base}/instances/{orthanc_id}/file", timeout=30).content

    def stop(self) -> None:
        self.process.stop()
