"""A demo PACS for the quickstart: Orthanc with DICOMweb on 127.0.0.1:8042, sample data loaded.

Runs in the foreground until Ctrl+C or SIGTERM, then stops Orthanc and removes its temporary
folder. Login ``demo``, password from ``DEMO_PACS_PASSWORD`` (``demo-only`` when unset). Loads
pydicom's CT_small and MR_small and a generated 20-slice CT series, then prints a request to try.
A port already in use is reported in one line, with exit status 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.dicom import ct_series, sample_file
from devtools.errors import DevtoolsError
from devtools.orthanc import OrthancServer

STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"  # the segmentation model of examples/models.json
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(Exception):
    """Ctrl+C or SIGTERM arrived."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _serve(orthanc: OrthancServer, workdir: Path, proxy: str) -> None:
    series = ct_series(study_uid=STUDY_UID, slices=20, rows=256, columns=256, seed=7)
    for item in [*series, sample_file("CT_small.dcm"), sample_file("MR_small.dcm")]:
        orthanc.upload(item.data)
    print(f"demo PACS: {orthanc.dicomweb} (login demo), data in {workdir}", flush=True)
    print(
        "try: curl "
        f"'{proxy}/segmentations/{MODEL}/studies/{series[0].study_uid}"
        f"/series/{series[0].series_uid}' | head -c 300",
        flush=True,
    )
    while True:
        signal.pause()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--proxy", default="http://127.0.0.1:8002")
    args = parser.parse_args(argv)
    password = os.environ.get("DEMO_PACS_PASSWORD", "demo-only")
    # Handlers, not a blocked signal mask: Orthanc would inherit the mask and ignore SIGTERM.
    # Setting them also undoes the SIG_IGN for SIGINT that `make demo`'s `&` gives this process.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _stop)
    workdir = Path(tempfile.mkdtemp(prefix="model-proxy-demo-pacs-"))
    orthanc: OrthancServer | None = None
    try:
        orthanc = OrthancServer(workdir, user="demo", password=password, port=args.port)
        _serve(orthanc, workdir, args.proxy)
    except _Stop:
        return 0
    except DevtoolsError as exc:
        print(f"demo PACS: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in STOP_SIGNALS:  # a second Ctrl+C must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        if orthanc is not None:
            orthanc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
