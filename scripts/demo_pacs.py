"""A demo PACS for the quickstart: Orthanc with DICOMweb on 127.0.0.1:8042, sample data loaded.

Runs in the foreground until interrupted. Login ``demo``, password from ``DEMO_PACS_PASSWORD``
(``demo-only`` when unset). Loads pydicom's CT_small and MR_small and a generated 20-slice CT
series, then prints a request to try.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.dicom import ct_series, sample_file
from devtools.orthanc import OrthancServer

STUDY_UID = "1.2.826.0.1.3680043.8.498.1001"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8042)
    parser.add_argument("--proxy", default="http://127.0.0.1:8002")
    args = parser.parse_args()
    password = os.environ.get("DEMO_PACS_PASSWORD", "demo-only")
    # held until sigwait below, so that Ctrl+C or SIGTERM stops Orthanc too
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    workdir = Path(tempfile.mkdtemp(prefix="model-proxy-demo-pacs-"))
    orthanc = OrthancServer(workdir, user="demo", password=password, port=args.port)
    series = ct_series(study_uid=STUDY_UID, slices=20, rows=256, columns=256, seed=7)
    for item in [*series, sample_file("CT_small.dcm"), sample_file("MR_small.dcm")]:
        orthanc.upload(item.data)
    model = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
    print(f"demo PACS: {orthanc.dicomweb} (login demo), data in {workdir}", flush=True)
    print(
        "try: curl "
        f"'{args.proxy}/segmentations/{model}/studies/{series[0].study_uid}"
        f"/series/{series[0].series_uid}' | head -c 300",
        flush=True,
    )
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
