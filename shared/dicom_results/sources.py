"""The source instances a result refers to: images only, with the headers DICOM requires.

A study in a real PACS holds more than images (an SR, a SEG, a key-object note, a PDF): those
are never used as image references. Real headers are often incomplete as well: Type 2 patient
and study attributes (PatientName, PatientID, StudyID, AccessionNumber, ...) that are missing
are added empty to a copy, so the objects made from them are still valid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydicom.dataset import Dataset

from model_proxy.shared.errors import UnconvertibleAnswer

__all__ = ["image_sources", "is_image", "sources_by_uid"]

# SOP classes that carry Rows and Columns yet are no image a result can be drawn on.
_NOT_IMAGES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF Storage
    }
)
_NON_IMAGE_MODALITIES = frozenset({"SEG", "SR", "KO", "PR", "RTSTRUCT", "DOC", "REG", "PLAN"})
_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
)
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_image(dataset: Dataset) -> bool:
    """True for an instance with pixels a result can refer to (not an SR, SEG, PR, ...)."""
    if "Rows" not in dataset or "Columns" not in dataset:
        return False
    if str(dataset.get("SOPClassUID", "")) in _NOT_IMAGES:
        return False
    return str(dataset.get("Modality", "")).upper() not in _NON_IMAGE_MODALITIES


def image_sources(sources: Iterable[Dataset]) -> list[Dataset]:
    """The images among ``sources`` as header copies: pixels left out, missing Type 2 patient
    and study attributes present and empty; the caller's datasets are not changed."""
    images = []
    for dataset in sources:
        if not is_image(dataset):
            continue
        header = Dataset()
        header.update({tag: element for tag, element in dataset.items()})
        for keyword in _PIXELS:
            if keyword in header:
                del header[keyword]
        for keyword in _TYPE_2:
            if keyword not in header:
                setattr(header, keyword, "")
        if hasattr(dataset, "file_meta"):
            header.file_meta = dataset.file_meta
        images.append(header)
    return images


def sources_by_uid(images: Sequence[Dataset]) -> dict[str, Dataset]:
    """The images by SOPInstanceUID; every image must belong to one study."""
    studies = {str(image.StudyInstanceUID) for image in images}
    if len(studies) > 1:
        raise UnconvertibleAnswer("the source instances belong to more than one study")
    return {str(image.SOPInstanceUID): image for image in images}
