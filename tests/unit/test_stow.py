"""The STOW-RS codecs on canned bytes: the request body and the store answer."""

from __future__ import annotations

import json

from model_proxy.shared.dicomweb.multipart import iter_parts
from model_proxy.shared.dicomweb.stow import (
    FailedInstance,
    StoredInstance,
    StoreResult,
    encode_store_body,
    parse_store_response,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_the_body_holds_each_file_as_it_is() -> None:
    files = [b"\x00" * 10 + b"DICM", b"--boundary-like\r\n bytes"]
    body = encode_store_body(files, "b0und")
    assert body.startswith(b"--b0und\r\nContent-Type: application/dicom\r\n")
    assert list(iter_parts(iter([body]), b"b0und")) == files


def test_the_answer_names_stored_and_failed_instances() -> None:
    answer = {
        "00081199": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [CT]},
                    "00081155": {"vr": "UI", "Value": ["1.1"]},
                    "00081190": {"vr": "UR", "Value": ["http://pacs/i/1.1"]},
                    "00081196": {"vr": "US", "Value": [0xB000]},
                }
            ],
        },
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [CT]},
                    "00081155": {"vr": "UI", "Value": ["1.2"]},
                    "00081197": {"vr": "US", "Value": [0xA900]},
                }
            ],
        },
    }
    stored, failed = parse_store_response(json.dumps(answer).encode())
    assert stored == (StoredInstance(CT, "1.1", "http://pacs/i/1.1", 0xB000),)
    assert failed == (FailedInstance(CT, "1.2", 0xA900),)
    assert failed[0].describe() == "1.2 (0xA900 data set does not match SOP class)"


def test_an_answer_without_instances_or_not_json_names_none() -> None:
    for body in (b"", b"not json", b"[]", b'{"00081198": {"vr": "SQ"}}', b"3"):
        assert parse_store_response(body) == ((), ())


def test_a_result_with_a_failure_is_an_error_naming_it() -> None:
    result = StoreResult(
        "pacs-1",
        202,
        (StoredInstance(CT, "1.1"),),
        (FailedInstance(CT, "1.2", None),),
        ("1.3",),
    )
    error = result.error()
    assert not result.ok and error is not None
    assert error.code == "pacs_store_failed" and error.status == 202
    assert error.message == (
        "server pacs-1 did not store 2 of 3 instances (HTTP 202): "
        "1.2 (no reason given); 1.3 (not in the answer)"
    )
    assert StoreResult("pacs-1", 200, (StoredInstance(CT, "1.1"),), ()).error() is None
