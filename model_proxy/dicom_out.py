"""``model-proxy infer --dicom-out DIR``: the DICOM objects a job made (its SEGs and SR), each
fetched with ``GET /jobs/{id}/result?format=<seg|sr>&series=<its series>`` and written as
``DIR/<SOPInstanceUID>.dcm``."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from model_proxy.api_client import ApiClient

__all__ = ["DicomOutError", "prepare_directory", "write_job_objects"]

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # a file name made of it cannot leave the folder
_MAX_UID = 64


class DicomOutError(Exception):
    """The folder cannot be made or written, or the job lists an object without a usable UID."""


def prepare_directory(directory: Path) -> None:
    """Create ``directory`` (and its parents) and check that files can be written in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise DicomOutError(
            f"cannot write DICOM files in {directory}: {exc.strerror or exc}"
        ) from None


def write_job_objects(client: ApiClient, job_id: str, directory: Path) -> list[Path]:
    """Fetch each object the job's ``outputs`` list and write it into ``directory``; the paths
    written, in the job's order (none when the job made no object)."""
    written = []
    for output in client.job(job_id).document.get("outputs") or []:
        uid = str(output.get("sopInstanceUID") or "")
        if not _UID.match(uid) or len(uid) > _MAX_UID:
            raise DicomOutError(f"job {job_id} lists an object without a valid SOP Instance UID")
        data = client.result_object(
            job_id, str(output.get("format")), output.get("seriesInstanceUID")
        )
        path = directory / f"{uid}.dcm"
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise DicomOutError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written
