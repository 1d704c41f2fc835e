"""The stored form of answers: packed once by the worker, read (old plain ones too) by the API."""

from __future__ import annotations

import gzip
import json

import pytest

from model_proxy.shared.jobs import answer_json, decompressed_chunks, pack_answer, read_answer

DOCUMENT = json.dumps({"1.2.3": {"points": [[0, 1] * 300] * 300}}).encode()


def test_a_large_answer_is_one_gzip_member_with_its_size_and_tag() -> None:
    stored = read_answer(pack_answer(DOCUMENT, level=1, min_bytes=1024))
    assert stored.gzipped
    assert gzip.decompress(stored.body) == DOCUMENT
    assert stored.size == len(DOCUMENT)
    assert len(stored.tag) == 32


def test_the_tag_is_the_same_for_the_same_answer_and_differs_for_another() -> None:
    first = read_answer(pack_answer(DOCUMENT, 1, 1024))
    assert read_answer(pack_answer(DOCUMENT, 1, 1024)).tag == first.tag
    assert read_answer(pack_answer(DOCUMENT + b" ", 1, 1024)).tag != first.tag


@pytest.mark.parametrize(("level", "min_bytes"), [(0, 0), (6, len(DOCUMENT) + 1)])
def test_off_or_below_the_threshold_the_answer_is_stored_as_it_is(
    level: int, min_bytes: int
) -> None:
    stored = read_answer(pack_answer(DOCUMENT, level, min_bytes))
    assert not stored.gzipped
    assert stored.body == DOCUMENT


@pytest.mark.parametrize("old", [b'{"a": 1}', b"[1, 2]", b'  {"a": "\\u0000"}'])
def test_a_plain_answer_stored_before_compression_is_read_as_it_is(old: bytes) -> None:
    stored = read_answer(old)
    assert not stored.gzipped
    assert stored.body == old and stored.size == len(old)
    assert stored.tag == read_answer(old).tag


def test_decompression_comes_in_bounded_chunks() -> None:
    stored = read_answer(pack_answer(DOCUMENT, 6, 0))
    chunks = list(decompressed_chunks(stored, chunk=4096))
    assert max(len(chunk) for chunk in chunks) <= 4096
    assert b"".join(chunks) == DOCUMENT == answer_json(pack_answer(DOCUMENT, 6, 0))


def test_a_cut_gzip_body_is_an_error_not_a_short_answer() -> None:
    packed = pack_answer(DOCUMENT, 1, 0)
    stored = read_answer(packed[:-100])
    with pytest.raises(ValueError, match="ends early"):
        b"".join(decompressed_chunks(stored))
