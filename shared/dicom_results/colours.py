"""The colour a zhiva answer gives a segment or ROI, as the CIELab value DICOM stores."""

from __future__ import annotations

import re

from highdicom.color import CIELabColor

__all__ = ["display_colour"]

_RGB = re.compile(r"^rgba?\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*(?:,[^)]*)?\)$")
_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


def display_colour(text: object) -> CIELabColor | None:
    """``rgb(r, g, b)``, ``rgba(r, g, b, a)``, ``#rrggbb`` or a CSS colour name as CIELab;
    ``None`` when the value is missing or cannot be read (the object then has no colour)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    match = _RGB.match(text)
    if match:
        red, green, blue = (int(part) for part in match.groups())
        if max(red, green, blue) > 255:
            return None
        return CIELabColor.from_rgb(red, green, blue)
    match = _HEX.match(text)
    if match:
        value = match[1]
        return CIELabColor.from_rgb(int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))
    try:
        return CIELabColor.from_string(text.lower())
    except (ValueError, KeyError, TypeError):
        return None
