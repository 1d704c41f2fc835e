"""A private Orthanc with its DICOMweb plugin, on a free loopback port, with basic auth."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from tests.support.processes import ManagedProcess, free_port, require_binary, wait_until

__all__ = ["ORTHANC_PLUGIN", "OrthancServer"]

ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class OrthancServer:
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
        wait_until(
            lambda: self.session.get(f"{self.base}/system", timeout=1).ok,
            30,
            "Orthanc",
            alive=lambda: self.process.alive,
        )

    def upload(self, data: bytes) -> None:
        response = self.session.post(
            f"{self.base}/instances",
            data=data,
            headers={"Content-Type": "application/dicom"},
            timeout=30,
        )
        response.raise_for_status()

    def instance_bytes(self, study: str, series: str, sop: str) -> bytes:
        """The Part-10 file Orthanc holds for this instance, looked up through its REST API."""
        found = self.session.post(f"{self.base}/tools/lookup", data=sop, timeout=10).json()
        orthanc_id = next(item["ID"] for item in found if item["Type"] == "Instance")
        return self.session.get(f"{self.base}/instances/{orthanc_id}/file", timeout=30).content

    def stop(self) -> None:
        self.process.stop()
