"""The instance encoding: byte-identical to compact ``json.dumps(list(data))``."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from devtools.dicom import ct_series
from model_proxy.shared.encoding import (
    encode_byte_array,
    encode_instance_string,
    iter_instance_string,
)


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


# --- edges around 64 KiB blocks (an earlier encoder's), every neighbour pair, threads ---

BLOCK = 1 << 16


def block_edge_sizes() -> list[int]:
    sizes = [1, 2, 3, 4, BLOCK - 2, BLOCK - 1, BLOCK, BLOCK + 1, BLOCK + 2]
    sizes += [2 * BLOCK - 1, 2 * BLOCK, 2 * BLOCK + 1, 3 * BLOCK + 7]
    return sizes


@pytest.mark.parametrize("size", block_edge_sizes())
def test_sizes_around_the_block_size_match_json_dumps(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert encode_byte_array(data) == reference(data)
    assert encode_instance_string(data) == b'"' + reference(data) + b'"'


@pytest.mark.parametrize("last", [0, 9, 10, 99, 100, 255])
@pytest.mark.parametrize("first", [0, 9, 10, 99, 100, 255])
def test_values_of_every_width_on_both_sides_of_a_block_boundary(first: int, last: int) -> None:
    """A short value's padding reaches back into the previous value, also across blocks."""
    rng = random.Random(first * 256 + last)
    data = bytearray(rng.randbytes(2 * BLOCK + 5))
    for boundary in (BLOCK, 2 * BLOCK):
        data[boundary - 1] = last
        data[boundary] = first
    assert encode_byte_array(data) == reference(bytes(data))


def test_every_ordered_pair_of_neighbours() -> None:
    """All 65,536 (a, b) pairs side by side, at even and odd offsets, across a block edge."""
    pairs = bytes(value for a in range(256) for b in range(256) for value in (a, b))
    for data in (pairs, b"\x07" + pairs):
        assert encode_byte_array(data) == reference(data)


def test_random_lengths_match_json_dumps() -> None:
    rng = random.Random(42)
    for _ in range(40):
        data = rng.randbytes(rng.randrange(0, 3 * BLOCK))
        assert encode_byte_array(data) == reference(data)


def test_ct_like_data_matches_json_dumps() -> None:
    """Signed 16-bit pixels around 1024 with noise, as CT slices hold them."""
    rng = np.random.default_rng(5)
    pixels = (1024 + rng.normal(0, 200, 300_000)).astype("<i2")
    pixels[:50_000] = 24  # air: -1000 HU + 1024
    data = pixels.tobytes()
    assert encode_byte_array(data) == reference(data)


def test_a_slice_of_a_buffer() -> None:
    data = random.Random(11).randbytes(BLOCK + 100)
    view = memoryview(data)[37 : BLOCK + 61]
    assert encode_byte_array(view) == reference(bytes(view))


@pytest.mark.parametrize("prefix", [b"", b",", b", "])
@pytest.mark.parametrize("size", [0, 1, BLOCK + 3])
def test_instance_string_with_a_prefix(prefix: bytes, size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert encode_instance_string(data, prefix) == prefix + encode_instance_string(data)


def test_a_prefix_longer_than_two_bytes_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_instance_string(b"\x01", b",,,")


def test_threads_encode_side_by_side() -> None:
    """Each thread has its own work arrays: concurrent encodings do not mix."""
    inputs = [random.Random(seed).randbytes(BLOCK + seed * 997) for seed in range(8)]
    expected = [reference(data) for data in inputs]

    def encode_all(index: int) -> bool:
        return all(encode_byte_array(inputs[index]) == expected[index] for _ in range(5))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(encode_all, range(len(inputs))))


# --- CT slices: int16 pixels, half of whose bytes are small high bytes ---


@pytest.fixture(scope="module")
def ct_slices() -> list[bytes]:
    """Part-10 CT files as the PACS sends them: a 512x512 slice and a few small ones."""
    large = ct_series(study_uid="1.2.3.4", slices=1, rows=512, columns=512, seed=9)
    small = ct_series(study_uid="1.2.3.4", slices=3, rows=64, columns=48, seed=2)
    return [item.data for item in large + small]


def test_ct_slices_match_json_dumps(ct_slices: list[bytes]) -> None:
    for data in ct_slices:
        assert encode_byte_array(data) == reference(data)
        assert encode_instance_string(data, b",") == b',"' + reference(data) + b'"'


def test_a_ct_slice_decodes_back_to_its_file(ct_slices: list[bytes]) -> None:
    data = ct_slices[0]
    assert bytes(json.loads(json.loads(encode_instance_string(data)))) == data


# --- the instance string in pieces ---


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 1999, 2000, 2001, 3500])
def test_pieces_join_to_the_instance_string(size: int) -> None:
    data = random.Random(size).randbytes(size)
    pieces = list(iter_instance_string(data, piece_bytes=1000))
    assert b"".join(pieces) == encode_instance_string(data)


def test_pieces_alternate_json_between_and_bounded_texts(ct_slices: list[bytes]) -> None:
    """The even pieces are quotes, brackets and commas; no text holds more than a piece's
    values, so a large instance never exists as one text."""
    data = ct_slices[0]
    pieces = list(iter_instance_string(data, piece_bytes=100_000))
    assert b"".join(pieces) == encode_instance_string(data)
    assert len(pieces) == 2 * -(-len(data) // 100_000) + 1
    assert all(piece in (b'"[', b",", b']"') for piece in pieces[::2])
    assert max(len(text) for text in pieces[1::2]) <= 4 * 100_000
    assert [piece.count(b",") for piece in pieces[1::2]][:-1] == [99_999] * (len(pieces) // 2 - 1)


def test_a_small_instance_is_one_text_between_quotes(ct_slices: list[bytes]) -> None:
    data = ct_slices[1]
    assert list(iter_instance_string(data)) == [b'"', reference(data), b'"']
