"""DICOM files derived from others for the store tests: a copy in a new series, a small SR."""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from devtools.dicom import part10_bytes

__all__ = ["BASIC_TEXT_SR", "copy_in_new_series", "read_header", "text_report"]

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")


def read_header(data: bytes) -> Dataset:
    """The file's attributes before its pixel data."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def copy_in_new_series(data: bytes, series_uid: str, study_uid: str | None = None) -> bytes:
    """The file with a new SOP Instance UID, in series ``series_uid`` (and study ``study_uid``
    when given)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    if study_uid is not None:
        ds.StudyInstanceUID = study_uid
    return part10_bytes(ds)


def text_report(study_uid: str, text: str = "No finding.") -> bytes:
    """A one-line Basic Text SR (Modality SR) in a series of its own of ``study_uid``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "MP-TEST"
    ds.StudyID = "1"
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([_code("121071", "DCM", "Finding")])
    item.TextValue = text
    ds.ContentSequence = Sequence([item])
    return part10_bytes(ds)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code
