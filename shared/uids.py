"""DICOM UIDs: digits and dots, at most 64 characters.

UIDs go into PACS URLs, so nothing else may pass.
"""

from __future__ import annotations

import re

from model_proxy.shared.errors import InvalidUid

__all__ = ["MAX_UID_LENGTH", "check_uid", "is_uid"]

MAX_UID_LENGTH = 64
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_uid(value: str) -> bool:
    return len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def check_uid(value: str, what: str) -> str:
    """Return ``value`` if it is a DICOM UID, else raise :class:`InvalidUid` naming ``what``."""
    if not is_uid(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidUid(
            f"{what} {shown!r} is not a DICOM UID "
            f"(digits and dots, at most {MAX_UID_LENGTH} characters)"
        )
    return value
