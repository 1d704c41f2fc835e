"""Reading ``data-filters`` from a query string, in every form a viewer may send it.

Accepted (model-contract §2.2), all normalised to a tuple of :class:`DataFilter`:

* ``data-filters=[{"dataKey": "a", "uuid": "1.2"}, ...]`` (one JSON array);
* ``data-filters={"dataKey": "a", ...}`` repeated, also as ``data-filters[]=`` (axios);
* qs brackets: ``data-filters[0][dataKey]=a&data-filters[0][uuid]=1.2``, nested as
  ``data-filters[0][dataFilter][0][dataKey]=b``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from model_proxy.shared.errors import InvalidDataFilter
from model_proxy.shared.request import DataFilter
from model_proxy.shared.uids import check_uid

__all__ = ["MAX_DEPTH", "MAX_FILTERS", "PARAMETER", "data_filters_from_items", "parse_data_filters"]

PARAMETER = "data-filters"
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_INDEX = re.compile(r"[0-9]{1,4}")
# Caps that keep a hostile query from costing more than a real one: filters in all (nested ones
# included), levels of nesting (a series filter and its instance filters), bracket keys in one
# parameter name, and characters in a dataKey.
MAX_FILTERS = 256
MAX_DEPTH = 2
_MAX_BRACKETS = 2 * MAX_DEPTH + 1
_MAX_KEY_LENGTH = 128


def parse_data_filters(query: Iterable[tuple[str, str]]) -> tuple[DataFilter, ...]:
    """Collect the data filters from all ``(name, value)`` pairs of a query string."""
    items: list[Any] = []
    nested: dict[str, Any] = {}
    for name, value in query:
        if name in (PARAMETER, PARAMETER + "[]"):
            items.extend(_json_items(value))
        elif name.startswith(PARAMETER + "["):
            path = _bracket_path(name)
            _assign(nested, path, value)
    if nested:
        items.extend(_ordered_values(nested))
    return data_filters_from_items(items)


def data_filters_from_items(items: Sequence[Any], name: str = PARAMETER) -> tuple[DataFilter, ...]:
    """Check the filters given as JSON objects (``{dataKey, uuid, dataFilter?}``), as a query's
    JSON array holds them or a ``POST /jobs`` body's ``dataFilters`` (``name``, in messages)."""
    budget = _Budget()
    return tuple(_to_filter(item, f"{name}[{i}]", 1, budget) for i, item in enumerate(items))


class _Budget:
    """Counts the filters read, nested ones included, against :data:`MAX_FILTERS`."""

    def __init__(self) -> None:
        self.used = 0

    def take(self) -> None:
        self.used += 1
        if self.used > MAX_FILTERS:
            raise InvalidDataFilter(f"{PARAMETER}: at most {MAX_FILTERS} filters in all")


def _json_items(value: str) -> list[Any]:
    if value.strip() == "":
        return []
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):  # also numbers too long to convert
        raise InvalidDataFilter(
            f"{PARAMETER} must be a JSON array or object of {{dataKey, uuid}}"
        ) from None
    return document if isinstance(document, list) else [document]


def _bracket_path(name: str) -> list[str]:
    rest = name[len(PARAMETER) :]
    keys = _BRACKETS.findall(rest)
    if "".join(f"[{k}]" for k in keys) != rest or not keys:
        raise InvalidDataFilter(f"query parameter {name[:80]!r} is not a valid {PARAMETER} key")
    if len(keys) > _MAX_BRACKETS:
        raise InvalidDataFilter(f"{PARAMETER}: filters nest at most {MAX_DEPTH} levels deep")
    return keys


def _assign(tree: dict[str, Any], path: list[str], value: str) -> None:
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise InvalidDataFilter(f"{PARAMETER}: conflicting keys at {key!r}")
        node = child
    if isinstance(node.get(path[-1]), dict):
        raise InvalidDataFilter(f"{PARAMETER}: conflicting keys at {path[-1]!r}")
    node[path[-1]] = value


def _ordered_values(tree: dict[str, Any]) -> list[Any]:
    """A bracket tree keyed by indices (``[0]``, ``[1]``, ...) becomes a list in index order."""

    def index(key: str) -> int:
        if not _INDEX.fullmatch(key):
            raise InvalidDataFilter(f"{PARAMETER}: expected a list index, got {key!r}")
        return int(key)

    return [tree[k] for k in sorted(tree, key=index)]


def _to_filter(item: Any, where: str, depth: int, budget: _Budget) -> DataFilter:
    budget.take()
    if not isinstance(item, dict):
        raise InvalidDataFilter(f"{where} must be an object with dataKey and uuid")
    data_key = item.get("dataKey")
    uid = item.get("uuid")
    if not isinstance(data_key, str) or not data_key:
        raise InvalidDataFilter(f"{where}.dataKey is missing")
    if len(data_key) > _MAX_KEY_LENGTH or not _is_text(data_key):
        raise InvalidDataFilter(
            f"{where}.dataKey must be text of at most {_MAX_KEY_LENGTH} characters"
        )
    if not isinstance(uid, str) or not uid:
        raise InvalidDataFilter(f"{where}.uuid is missing")
    check_uid(uid, f"{where}.uuid")
    children = item.get("dataFilter", [])
    if isinstance(children, dict):  # from the bracket form: keyed by index
        children = _ordered_values(children)
    if not isinstance(children, list):
        raise InvalidDataFilter(f"{where}.dataFilter must be a list")
    if children and depth >= MAX_DEPTH:
        raise InvalidDataFilter(f"{PARAMETER}: filters nest at most {MAX_DEPTH} levels deep")
    return DataFilter(
        data_key=data_key,
        uuid=uid,
        data_filter=tuple(
            _to_filter(child, f"{where}.dataFilter[{i}]", depth + 1, budget)
            for i, child in enumerate(children)
        ),
    )


def _is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode text (no lone surrogates from a JSON escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
