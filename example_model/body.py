"""The request body of the model contract, decoded into DICOM file bytes. No I/O here.

A model receives the zhiva JSON body (below), or, when its models.json entry says
``"transport": "multipart"``, the files themselves as the parts of a multipart/related body
(model-contract §6; :func:`multipart_input` turns the parts into the same :class:`ModelInput`).

The JSON body has one of three shapes (model-contract §2):

* ``"array"``: a list of instance strings (the study or series level);
* ``"string"``: a single instance string (the instance level);
* ``"keyed"``: an object of data filters, ``{"<dataKey>": {"data": <array | string | object>}}``,
  nested to any depth.

Each *instance string* holds the JSON text of the DICOM Part-10 file's byte values, for example
``"[0,0,1,255]"``. Other fields beside ``"data"`` in a filter entry are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from model_proxy.example_model.errors import InvalidInput
from model_proxy.example_model.multipart import Part

__all__ = [
    "BodyShape",
    "EncodedInstance",
    "ModelInput",
    "decode_instance",
    "multipart_input",
    "parse_body",
]

BodyShape = Literal["array", "string", "keyed"]
Transport = Literal["json", "multipart"]

DATA_KEY_HEADER = "x-model-proxy-data-key"
"""A part's data-filter key, ``<dataKey>`` or ``<series key>/<instance key>`` when nested."""
INSTANCE_LEVEL = "/studies/series/instances"
"""The ``X-Model-Proxy-Level`` of a request for one instance."""


@dataclass(frozen=True)
class EncodedInstance:
    """One DICOM file of the body and where it was found, e.g. ``$["series-one"].data[2]``."""

    location: str
    data: bytes
    data_key: str | None = None
    """The data-filter key it came under, nested keys joined by ``/`` (``pre/slice``)."""


@dataclass(frozen=True)
class ModelInput:
    """What a request body holds: its shape, its top-level keys and its files in body order."""

    shape: BodyShape
    keys: tuple[str, ...]
    instances: tuple[EncodedInstance, ...]
    transport: Transport = "json"


def parse_body(raw: bytes) -> ModelInput:
    """Decode a request body; raise :class:`InvalidInput` saying what is wrong and where."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None
    found: list[EncodedInstance] = []
    _collect(document, "$", found)
    if not found:
        raise InvalidInput("the body holds no instances")
    if isinstance(document, dict):
        return ModelInput("keyed", tuple(document), tuple(found))
    return ModelInput("array" if isinstance(document, list) else "string", (), tuple(found))


def multipart_input(parts: list[Part], level: str | None = None) -> ModelInput:
    """The files of a multipart body, keyed by their data-filter header when they carry one.

    The shapes match the JSON body's: ``keyed`` when the parts carry data-filter keys (``keys``
    the top-level ones, in order), ``string`` for a request of one instance (``level``, the
    ``X-Model-Proxy-Level`` header), else ``array``.
    """
    if not parts:
        raise InvalidInput("the body holds no instances")
    found: list[EncodedInstance] = []
    keys: dict[str, None] = {}
    for index, part in enumerate(parts, 1):
        content_type = part.headers.get("content-type", "application/dicom")
        if content_type.split(";", 1)[0].strip().lower() != "application/dicom":
            raise InvalidInput(f"part {index} is {content_type!r}, not application/dicom")
        key = part.headers.get(DATA_KEY_HEADER)
        if key is not None:
            keys.setdefault(key.split("/", 1)[0])
        where = f"part {index}" + (f" ({key})" if key else "")
        found.append(EncodedInstance(where, part.data, key))
    if keys and any(DATA_KEY_HEADER not in part.headers for part in parts):
        raise InvalidInput("some parts carry an X-Model-Proxy-Data-Key header and some do not")
    if keys:
        return ModelInput("keyed", tuple(keys), tuple(found), "multipart")
    shape: BodyShape = "string" if level == INSTANCE_LEVEL and len(found) == 1 else "array"
    return ModelInput(shape, (), tuple(found), "multipart")


def decode_instance(text: str, location: str = "$") -> bytes:
    """The file bytes of one instance string: ``"[0,1,255]"`` becomes ``b"\\x00\\x01\\xff"``."""
    try:
        values = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidInput(f"{location} is not the JSON text of a byte array") from None
    if not isinstance(values, list) or not values:
        raise InvalidInput(f"{location} is not the JSON text of a non-empty byte array")
    try:
        return bytes(values)  # checks that every value is an int in 0-255
    except (TypeError, ValueError):
        raise InvalidInput(f"{location} holds something other than byte values 0-255") from None


def _collect(
    node: object, location: str, found: list[EncodedInstance], keys: tuple[str, ...] = ()
) -> None:
    data_key = "/".join(keys) or None
    if isinstance(node, str):
        found.append(EncodedInstance(location, decode_instance(node, location), data_key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            where = f"{location}[{index}]"
            if not isinstance(item, str):
                raise InvalidInput(f"{where} is not an instance string")
            found.append(EncodedInstance(where, decode_instance(item, where), data_key))
    elif isinstance(node, dict):
        for key, entry in node.items():
            where = f"{location}[{orjson.dumps(key).decode()}]"
            if not isinstance(entry, dict) or "data" not in entry:
                raise InvalidInput(f'{where} is not an object with a "data" field')
            _collect(entry["data"], f"{where}.data", found, (*keys, key))
    else:
        raise InvalidInput(
            f"{location} is neither an instance string, a list of them, nor an object of "
            '{"<dataKey>": {"data": ...}} entries'
        )
