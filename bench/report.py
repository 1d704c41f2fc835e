"""A benchmark row (a measurement against a baseline of the same run) and the printed table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Row", "at_least", "at_most", "failed_row", "growth_at_most", "render_table"]


@dataclass(frozen=True)
class Row:
    name: str
    measured: str
    baseline: str
    ratio: float
    goal: str
    passed: bool | None  # None: the row could not be measured
    note: str = ""

    @property
    def result(self) -> str:
        return "error" if self.passed is None else "pass" if self.passed else "FAIL"


def _ratio(measured: float, baseline: float) -> float:
    return measured / baseline if baseline else math.nan


def at_least(
    name: str, measured: float, baseline: float, unit: str, goal: float, note: str = ""
) -> Row:
    """Higher is better: passes when measured / baseline >= goal."""
    passed = _ratio(measured, baseline) >= goal
    return _ratio_row(name, measured, baseline, unit, f">= {goal:g}x", passed, note)


def at_most(
    name: str, measured: float, baseline: float, unit: str, goal: float, note: str = ""
) -> Row:
    """Lower is better: passes when measured / baseline <= goal."""
    passed = _ratio(measured, baseline) <= goal
    return _ratio_row(name, measured, baseline, unit, f"<= {goal:g}x", passed, note)


def _ratio_row(
    name: str, measured: float, baseline: float, unit: str, goal: str, passed: bool, note: str
) -> Row:
    """A measured row: both values formatted in ``unit``, their ratio, the goal and verdict."""
    return Row(
        name,
        _fmt(measured, unit),
        _fmt(baseline, unit),
        _ratio(measured, baseline),
        goal,
        passed,
        note,
    )


def growth_at_most(
    name: str, measured: float, baseline: float, unit: str, limit: float, note: str = ""
) -> Row:
    """Lower is better: passes when measured - baseline <= limit."""
    growth = measured - baseline
    growth_note = f"{growth:+.1f} {unit}" + (f"; {note}" if note else "")
    return _ratio_row(
        name, measured, baseline, unit, f"<= +{limit:g} {unit}", growth <= limit, growth_note
    )


def failed_row(name: str, goal: str, error: BaseException) -> Row:
    return Row(name, "-", "-", math.nan, goal, None, f"{type(error).__name__}: {error}")


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit in ("MB/s", "req/s", "MB"):
        return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{value:g} {unit}"


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table (it reads as well in a terminal as in the README), then the notes."""
    header = ("row", "measured", "baseline", "ratio", "goal", "result")
    cells = [
        (row.name, row.measured, row.baseline, f"{row.ratio:.2f}x", row.goal, row.result)
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    lines = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [line(values) for values in cells]
    notes = [f"* {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join([*lines, "", *notes])
