"""DICOM data made in memory: pydicom's sample files and generated multi-slice CT series."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

__all__ = ["DicomFile", "ct_series", "describe", "part10_bytes", "sample_file", "slice_pixels"]

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")


@dataclass(frozen=True)
class DicomFile:
    """A Part-10 file and the identifiers a request names it by."""

    data: bytes
    study_uid: str
    series_uid: str
    sop_uid: str
    rows: int
    columns: int
    instance_number: int


def describe(data: bytes) -> DicomFile:
    """A Part-10 file with the identifiers read from its header."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return DicomFile(
        data,
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        int(ds.Rows),
        int(ds.Columns),
        int(getattr(ds, "InstanceNumber", 0) or 0),
    )


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` written as a DICOM Part-10 file, with its preamble and file meta."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sample_file(name: str) -> DicomFile:
    """One of pydicom's own test files, e.g. ``CT_small.dcm``."""
    path = get_testdata_file(name)
    assert path is not None, name
    return describe(Path(str(path)).read_bytes())


def slice_pixels(index: int, rows: int, columns: int, seed: int) -> np.ndarray:
    """A phantom: a body ellipse, a dense ring and a sphere that moves through the slices."""
    y = np.linspace(-1.0, 1.0, rows)[:, None]
    x = np.linspace(-1.0, 1.0, columns)[None, :]
    r2 = (x / 0.85) ** 2 + (y / 0.65) ** 2
    hu = np.full((rows, columns), -1000.0)
    hu[r2 <= 1.0] = 40.0
    hu[(r2 > 0.8) & (r2 <= 1.0)] = 700.0
    hu[(x - 0.3) ** 2 + (y + 0.1) ** 2 <= 0.04 + 0.01 * (index % 5)] = 300.0
    rng = np.random.default_rng(seed * 1000 + index)
    hu += rng.normal(0.0, 10.0, size=(rows, columns))
    return np.clip(hu + 1024.0, -32768, 32767).astype("<i2")


def ct_series(
    *, study_uid: str, slices: int, rows: int, columns: int, seed: int, series_number: int = 1
) -> list[DicomFile]:
    """A CT series of signed 16-bit slices, Explicit VR Little Endian, with unique UIDs."""
    series_uid = generate_uid(entropy_srcs=[study_uid, "series", str(seed)])
    frame_uid = generate_uid(entropy_srcs=[study_uid, "frame"])
    files = []
    for index in range(slices):
        sop_uid = generate_uid(entropy_srcs=[series_uid, str(index)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientName = "Test^Phantom"
        ds.PatientID = "MP-TEST"
        ds.StudyID = "1"
        ds.StudyDate = "20240102"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, -1.25 * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.25
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = slice_pixels(index, rows, columns, seed).tobytes()
        files.append(describe(part10_bytes(ds)))
    return files
