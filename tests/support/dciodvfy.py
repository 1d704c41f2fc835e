"""dciodvfy (Debian package dicom3tools), the DICOM validator, run on a file: its errors.

A missing dciodvfy raises :class:`MissingBinaryError`: the test is skipped, and fails under CI.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from pydicom.dataset import Dataset

from devtools.processes import require_binary

__all__ = ["dciodvfy_errors", "validate"]

_TIMEOUT = 30.0


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dciodvfy reports as errors for the file at ``path`` (warnings are not errors)."""
    binary = require_binary("/usr/bin/dciodvfy", "dicom3tools")
    run = subprocess.run(
        [binary, str(path)], capture_output=True, text=True, timeout=_TIMEOUT, check=False
    )
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def validate(dataset: Dataset, folder: Path) -> list[str]:
    """``dataset`` written as a Part-10 file in ``folder``, then :func:`dciodvfy_errors`."""
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return dciodvfy_errors(path)
