"""A realistic segmentation answer: what a zhiva segmentation model answers for a CT series.

Each slice of the CT phantom of :mod:`devtools.dicom` (body, dense ring, a moving sphere, noise
of 10 HU) is thresholded at 55 HU, 1.5 standard deviations of the noise above soft tissue: the
mask has the organs' outlines and about 7% of the soft tissue's pixels flipped by the noise, as
thresholded CT does. The document has the example model's shape
(``{study: {series: {sop: {"segments": [{"points": <rows x columns 0/1>, ...}]}}}}``).
"""

from __future__ import annotations

import functools

import numpy as np
import orjson

from devtools.dicom import slice_pixels

__all__ = ["segmentation_answer"]

_THRESHOLD_HU = 55.0
_RESCALE = 1024.0  # the phantom's stored values are HU + 1024


@functools.lru_cache(maxsize=4)
def segmentation_answer(slices: int, rows: int, columns: int) -> bytes:
    """The JSON answer for ``slices`` slices of ``rows`` x ``columns`` (about 2 bytes a pixel)."""
    frames = {
        f"1.2.826.0.1.3680043.8.498.7070.3.{index}": {
            "segments": [
                {
                    "points": (
                        slice_pixels(index, rows, columns, seed=1) > _THRESHOLD_HU + _RESCALE
                    ).astype(np.uint8),
                    "color": "#ff0000",
                    "className": "above-threshold",
                    "description": f"pixels above {_THRESHOLD_HU:g} HU",
                }
            ]
        }
        for index in range(slices)
    }
    document = {"1.2.826.0.1.3680043.8.498.7070.1": {"1.2.826.0.1.3680043.8.498.7070.2": frames}}
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
