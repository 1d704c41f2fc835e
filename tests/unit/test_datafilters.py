"""``data-filters`` in every query form of model-contract §2.2, normalised to DataFilter."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

import pytest

from model_proxy.shared.datafilters import PARAMETER, parse_data_filters
from model_proxy.shared.errors import InvalidDataFilter, InvalidRequest
from model_proxy.shared.request import DataFilter

SERIES_ONE = "1.2.826.0.1.3680043.8.498.1"
SERIES_TWO = "1.2.826.0.1.3680043.8.498.2"
INSTANCE_A = "1.2.826.0.1.3680043.8.498.2.1"
INSTANCE_B = "1.2.826.0.1.3680043.8.498.2.2"

TWO_SERIES = (
    DataFilter(data_key="series-one", uuid=SERIES_ONE),
    DataFilter(
        data_key="series-two",
        uuid=SERIES_TWO,
        data_filter=(
            DataFilter(data_key="first", uuid=INSTANCE_A),
            DataFilter(data_key="second", uuid=INSTANCE_B),
        ),
    ),
)
AS_JSON = [
    {"dataKey": "series-one", "uuid": SERIES_ONE},
    {
        "dataKey": "series-two",
        "uuid": SERIES_TWO,
        "dataFilter": [
            {"dataKey": "first", "uuid": INSTANCE_A},
            {"dataKey": "second", "uuid": INSTANCE_B},
        ],
    },
]


def from_url(query: str) -> tuple[DataFilter, ...]:
    """Parse as the broker does: the decoded (name, value) pairs of the query string."""
    return parse_data_filters(parse_qsl(query, keep_blank_values=True))


# --- the accepted forms -------------------------------------------------------------------------


def test_one_json_array() -> None:
    assert from_url(urlencode({PARAMETER: json.dumps(AS_JSON)})) == TWO_SERIES


@pytest.mark.parametrize("name", [PARAMETER, PARAMETER + "[]"])
def test_repeated_json_objects(name: str) -> None:
    query = urlencode([(name, json.dumps(item)) for item in AS_JSON])
    assert from_url(query) == TWO_SERIES


def test_qs_brackets_with_nested_data_filter() -> None:
    query = urlencode(
        [
            ("data-filters[0][dataKey]", "series-one"),
            ("data-filters[0][uuid]", SERIES_ONE),
            ("data-filters[1][dataKey]", "series-two"),
            ("data-filters[1][uuid]", SERIES_TWO),
            ("data-filters[1][dataFilter][0][dataKey]", "first"),
            ("data-filters[1][dataFilter][0][uuid]", INSTANCE_A),
            ("data-filters[1][dataFilter][1][dataKey]", "second"),
            ("data-filters[1][dataFilter][1][uuid]", INSTANCE_B),
        ]
    )
    assert from_url(query) == TWO_SERIES


def test_qs_brackets_unencoded_and_out_of_order() -> None:
    """Brackets may arrive literally; indices decide the order, numerically (10 after 2)."""
    query = "&".join(
        f"data-filters[{i}][uuid]=1.{i}&data-filters[{i}][dataKey]=k{i}" for i in (10, 2, 0, 1)
    )
    assert [f.data_key for f in from_url(query)] == ["k0", "k1", "k2", "k10"]


def test_other_parameters_are_ignored() -> None:
    query = urlencode({"server": "b5208f48-f748-4339-9402-d1148dab571e", "data-filtersx": "1"})
    assert from_url(query) == ()


@pytest.mark.parametrize("query", ["", "data-filters=", "data-filters=%20%20", "data-filters[]="])
def test_no_filters(query: str) -> None:
    assert from_url(query) == ()


def test_forms_can_be_mixed() -> None:
    query = urlencode(
        [
            (PARAMETER, json.dumps(AS_JSON[0])),
            ("data-filters[0][dataKey]", "series-three"),
            ("data-filters[0][uuid]", "1.2.3"),
        ]
    )
    assert [f.data_key for f in from_url(query)] == ["series-one", "series-three"]


def test_unknown_fields_inside_a_filter_are_ignored() -> None:
    item = {"dataKey": "k", "uuid": "1.2", "title": "Pre-contrast", "extra": [1]}
    assert from_url(urlencode({PARAMETER: json.dumps([item])})) == (
        DataFilter(data_key="k", uuid="1.2"),
    )


# --- what is rejected, and what the viewer is told ----------------------------------------------


@pytest.mark.parametrize(
    "uid",
    [
        "b5208f48-f748-4339-9402-d1148dab571e",
        "1.2.3/../../studies",
        "1.2 ",
        "1." + "2" * 63,
    ],
)
def test_a_uuid_that_is_not_a_dicom_uid_is_rejected(uid: str) -> None:
    query = urlencode({PARAMETER: json.dumps([{"dataKey": "k", "uuid": uid}])})
    with pytest.raises(InvalidRequest) as caught:
        from_url(query)
    assert "data-filters[0].uuid" in caught.value.message
    assert "is not a DICOM UID" in caught.value.message


def test_a_nested_uuid_that_is_not_a_uid_is_rejected_naming_its_place() -> None:
    item = {"dataKey": "s", "uuid": "1.2", "dataFilter": [{"dataKey": "i", "uuid": "x"}]}
    with pytest.raises(InvalidRequest, match=r"data-filters\[0\]\.dataFilter\[0\]\.uuid 'x'"):
        from_url(urlencode({PARAMETER: json.dumps([item])}))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (
            [(PARAMETER, "{not json")],
            "data-filters must be a JSON array or object of {dataKey, uuid}",
        ),
        ([(PARAMETER, '["k"]')], "data-filters[0] must be an object with dataKey and uuid"),
        ([(PARAMETER, '{"uuid": "1.2"}')], "data-filters[0].dataKey is missing"),
        ([(PARAMETER, '{"dataKey": "", "uuid": "1.2"}')], "data-filters[0].dataKey is missing"),
        ([(PARAMETER, '{"dataKey": "k"}')], "data-filters[0].uuid is missing"),
        ([(PARAMETER, '{"dataKey": "k", "uuid": 12}')], "data-filters[0].uuid is missing"),
        (
            [(PARAMETER, '{"dataKey": "k", "uuid": "1.2", "dataFilter": "x"}')],
            "data-filters[0].dataFilter must be a list",
        ),
        (
            [("data-filters[0]dataKey", "k")],
            "query parameter 'data-filters[0]dataKey' is not a valid data-filters key",
        ),
        (
            [("data-filters[", "k")],
            "query parameter 'data-filters[' is not a valid data-filters key",
        ),
        (
            [("data-filters[x][dataKey]", "k"), ("data-filters[x][uuid]", "1.2")],
            "data-filters: expected a list index, got 'x'",
        ),
        (
            [("data-filters[0]", "k"), ("data-filters[0][uuid]", "1.2")],
            "data-filters: conflicting keys at '0'",
        ),
        (
            [("data-filters[0][uuid]", "1.2"), ("data-filters[0]", "k")],
            "data-filters: conflicting keys at '0'",
        ),
    ],
)
def test_malformed_filters(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(InvalidDataFilter) as caught:
        parse_data_filters(pairs)
    assert caught.value.message == message


def test_at_most_256_filters() -> None:
    items = [{"dataKey": f"k{i}", "uuid": "1.2"} for i in range(257)]
    with pytest.raises(InvalidDataFilter, match="at most 256 filters"):
        parse_data_filters([(PARAMETER, json.dumps(items))])
    assert len(parse_data_filters([(PARAMETER, json.dumps(items[:256]))])) == 256


def test_qs_empty_brackets_are_rejected_as_a_bad_request() -> None:
    """qs ``arrayFormat: brackets`` (``[][dataKey]``) is ambiguous for lists of objects."""
    with pytest.raises(InvalidDataFilter):
        parse_data_filters([("data-filters[][dataKey]", "k"), ("data-filters[][uuid]", "1.2")])


def test_a_non_decimal_digit_as_index_is_a_bad_request() -> None:
    """``"²".isdigit()`` is true, but ``int("²")`` raises ValueError (an internal error)."""
    pairs = [("data-filters[\u00b2][dataKey]", "k"), ("data-filters[\u00b2][uuid]", "1.2")]
    with pytest.raises(InvalidDataFilter):
        parse_data_filters(pairs)


def test_deeply_nested_json_is_a_bad_request() -> None:
    """A few kilobytes of ``[`` must give the viewer a 400, not an internal error."""
    with pytest.raises(InvalidDataFilter):
        parse_data_filters([(PARAMETER, "[" * 5000)])


def _nested(depth: int) -> dict[str, object]:
    """A filter with ``depth`` levels: each but the last holds one nested filter."""
    item: dict[str, object] = {"dataKey": f"level-{depth}", "uuid": "1.2"}
    for level in range(depth - 1, 0, -1):
        item = {"dataKey": f"level-{level}", "uuid": "1.2", "dataFilter": [item]}
    return item


def test_nested_filters_count_toward_the_cap() -> None:
    """The cap holds for filters in all, not only the top level."""
    inner = [{"dataKey": f"i{i}", "uuid": "1.2"} for i in range(256)]
    items = [{"dataKey": "series", "uuid": "1.2", "dataFilter": inner}]
    with pytest.raises(InvalidDataFilter, match="at most 256 filters in all"):
        parse_data_filters([(PARAMETER, json.dumps(items))])
    items[0]["dataFilter"] = inner[:255]
    assert len(parse_data_filters([(PARAMETER, json.dumps(items))])[0].data_filter) == 255


@pytest.mark.parametrize("depth", [3, 250])
def test_filters_nest_at_most_two_levels(depth: int) -> None:
    with pytest.raises(InvalidDataFilter, match="nest at most 2 levels"):
        parse_data_filters([(PARAMETER, json.dumps([_nested(depth)]))])
    assert parse_data_filters([(PARAMETER, json.dumps([_nested(2)]))])[0].data_filter


def test_bracket_names_nest_at_most_two_levels() -> None:
    name = "data-filters[0]" + "[dataFilter][0]" * 2 + "[dataKey]"
    with pytest.raises(InvalidDataFilter, match="nest at most 2 levels"):
        parse_data_filters([(name, "k")])


def test_a_number_too_long_to_convert_is_a_bad_request() -> None:
    """json.loads raises a plain ValueError past 4,300 digits, not a JSONDecodeError."""
    with pytest.raises(InvalidDataFilter):
        parse_data_filters([(PARAMETER, "[" + "9" * 5000 + "]")])


def test_a_lone_surrogate_in_a_data_key_is_a_bad_request() -> None:
    """``\\ud800`` decodes to a str that no UTF-8 writer (Redis, the log) can encode."""
    with pytest.raises(InvalidDataFilter, match="dataKey must be text"):
        parse_data_filters([(PARAMETER, '{"dataKey": "\\ud800", "uuid": "1.2"}')])


def test_a_data_key_is_at_most_128_characters() -> None:
    with pytest.raises(InvalidDataFilter, match="at most 128 characters"):
        parse_data_filters([(PARAMETER, json.dumps({"dataKey": "k" * 129, "uuid": "1.2"}))])
