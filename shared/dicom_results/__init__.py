"""AI results as DICOM objects: pure functions from a zhiva answer and the source headers to a
Segmentation (SEG) or a TID 1500 Measurement Report (SR), naming the model that made them.

No I/O here: the caller passes the source instances' headers in and stores the objects.
"""

from __future__ import annotations

from model_proxy.shared.dicom_results.colours import display_colour
from model_proxy.shared.dicom_results.identity import UNKNOWN, ModelIdentity, identity_of
from model_proxy.shared.dicom_results.seg import segmentation_to_seg
from model_proxy.shared.dicom_results.sources import image_sources, is_image
from model_proxy.shared.dicom_results.sr import RESULT_SCHEME, annotations_to_sr, predictions_to_sr

__all__ = [
    "RESULT_SCHEME",
    "UNKNOWN",
    "ModelIdentity",
    "annotations_to_sr",
    "display_colour",
    "identity_of",
    "image_sources",
    "is_image",
    "predictions_to_sr",
    "segmentation_to_seg",
]
