"""DICOM UIDs: digits and dots, at most 64 characters."""

from __future__ import annotations

import pytest

from model_proxy.shared.errors import InvalidRequest, InvalidUid
from model_proxy.shared.uids import MAX_UID_LENGTH, check_uid, is_uid

VALID = [
    "1",
    "0",
    "1.2.840.10008.1.2.1",
    "1.3.6.1.4.1.25403.345050719074.3824.20170125095438.5",
    "1." + "2" * 62,  # exactly 64 characters
]

INVALID = [
    "",
    ".",
    ".1.2",
    "1.2.",
    "1..2",
    "1.2a",
    "1.2 ",
    " 1.2",
    "1.2\n",
    "1,2",
    "-1.2",
    "1.2/../../studies",
    "1.2?x=1",
    "b5208f48-f748-4339-9402-d1148dab571e",  # a UUID is not a UID
    "\u0661.\u0662",  # Arabic-Indic digits are digits to Python, not to DICOM
    "1." + "2" * 63,  # 65 characters
]


def test_the_limit_is_the_dicom_one() -> None:
    assert MAX_UID_LENGTH == 64
    assert len(VALID[-1]) == 64
    assert len(INVALID[-1]) == 65


@pytest.mark.parametrize("value", VALID)
def test_valid_uids(value: str) -> None:
    assert is_uid(value)
    assert check_uid(value, "study UID") == value


@pytest.mark.parametrize("value", INVALID, ids=repr)
def test_invalid_uids(value: str) -> None:
    assert not is_uid(value)
    with pytest.raises(InvalidUid):
        check_uid(value, "series UID")


def test_the_error_names_what_and_shows_the_value() -> None:
    with pytest.raises(InvalidUid) as caught:
        check_uid("1.2.x", "series UID")
    assert caught.value.message == (
        "series UID '1.2.x' is not a DICOM UID (digits and dots, at most 64 characters)"
    )
    assert caught.value.code == "invalid_uid"
    assert isinstance(caught.value, InvalidRequest)


def test_a_long_value_is_shortened_in_the_message() -> None:
    value = "9" * 1000
    with pytest.raises(InvalidUid) as caught:
        check_uid(value, "study UID")
    message = caught.value.message
    assert repr("9" * 77 + "...") in message
    assert len(message) < 200
