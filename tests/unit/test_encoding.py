"""The instance encoding: byte-identical to compact ``json.dumps(list(data))``."""

from __future__ import annotations

import json
import random

import pytest

from shared.encoding import encode_byte_array, encode_instance_string


def reference(data: bytes) -> bytes:
    return json.dumps(list(data), separators=(",", ":")).encode()


def random_inputs() -> list[bytes]:
    rng = random.Random(20261128)
    sizes = [2, 3, 4, 5, 7, 8, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1000, 4096, 65537]
    sizes += [rng.randrange(1, 5000) for _ in range(40)]
    return [rng.randbytes(size) for size in sizes]


EDGE_INPUTS = {
    "empty": b"",
    "all 256 values": bytes(range(256)),
    "all 256 values reversed": bytes(range(255, -1, -1)),
    "zeros": bytes(1000),
    "0xff": b"\xff" * 1000,
    "one and two digit values": bytes([9, 10, 99, 100, 0, 1]),
    "DICOM preamble": bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00",
}


@pytest.mark.parametrize("value", range(256))
def test_every_single_byte(value: int) -> None:
    assert encode_byte_array(bytes([value])) == f"[{value}]".encode()


@pytest.mark.parametrize("data", EDGE_INPUTS.values(), ids=EDGE_INPUTS.keys())
def test_edge_inputs_match_json_dumps(data: bytes) -> None:
    assert encode_byte_array(data) == reference(data)


def test_empty_is_an_empty_array() -> None:
    assert encode_byte_array(b"") == b"[]"
    assert encode_instance_string(b"") == b'"[]"'


@pytest.mark.parametrize("data", random_inputs(), ids=lambda data: f"{len(data)}-bytes")
def test_random_inputs_match_json_dumps(data: bytes) -> None:
    assert encode_byte_array(data) == reference(data)


def test_a_large_input_matches_json_dumps() -> None:
    data = random.Random(7).randbytes(3 << 20)
    assert encode_byte_array(data) == reference(data)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_bytes_like_inputs(wrap: type) -> None:
    data = bytes(range(256)) * 3
    assert encode_byte_array(wrap(data)) == reference(data)


def test_the_encoding_does_not_change_its_input() -> None:
    data = bytearray(range(256))
    encode_byte_array(data)
    assert data == bytearray(range(256))


@pytest.mark.parametrize(
    "data", [b"", b"\x00", bytes(range(256)), random.Random(3).randbytes(999)], ids=repr
)
def test_instance_string_is_what_models_decode(data: bytes) -> None:
    """Models run ``bytes(json.loads(instance))`` on the JSON string value (contract 2.2)."""
    encoded = encode_instance_string(data)
    assert encoded == json.dumps(reference(data).decode()).encode()
    instance = json.loads(encoded)
    assert isinstance(instance, str)
    assert bytes(json.loads(instance)) == data
