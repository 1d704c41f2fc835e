"""The example model's computation: which pixels lie above a threshold, and their outline.

This is where a real model would run its network. Here every pixel whose modality value is
strictly greater than the threshold is marked; without a threshold the instance's own mean value
is used, so every instance shows a region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model_proxy.example_model.instances import Instance, modality_values, voxel_volume_mm3

__all__ = ["Finding", "analyse", "convex_hull"]

Point = tuple[int, int]


@dataclass(frozen=True)
class Finding:
    """The result for one instance."""

    instance: Instance
    mask: npt.NDArray[np.uint8]
    """Rows x Columns, 1 where the value lies above the threshold, else 0."""
    threshold: float
    threshold_is_mean: bool
    """True when no threshold was asked for and the instance's mean value was used."""
    voxel_volume_mm3: float

    @property
    def voxels_above(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def voxels(self) -> int:
        return int(self.mask.size)


def analyse(instance: Instance, threshold: float | None = None) -> Finding:
    """Mark the pixels of ``instance`` above ``threshold`` (default: the instance's mean value)."""
    values = modality_values(instance)
    limit = float(values.mean()) if threshold is None else threshold
    return Finding(
        instance=instance,
        mask=(values > limit).astype(np.uint8),
        threshold=limit,
        threshold_is_mean=threshold is None,
        voxel_volume_mm3=voxel_volume_mm3(instance),
    )


def convex_hull(mask: npt.NDArray[np.uint8]) -> list[Point]:
    """The convex hull of the marked pixels as ``(x, y)`` = (column, row) vertices.

    Vertices are pixel positions, so they lie inside the image. An empty mask gives ``[]``; a
    single pixel gives one vertex and pixels on one line give its two ends.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    marked = mask[rows].astype(bool)
    # Only the leftmost and the rightmost marked pixel of a row can be a vertex of the hull.
    left = marked.argmax(axis=1)
    right = marked.shape[1] - 1 - marked[:, ::-1].argmax(axis=1)
    candidates = {(int(x), int(y)) for x, y in zip(left, rows, strict=True)}
    candidates.update((int(x), int(y)) for x, y in zip(right, rows, strict=True))
    return _monotone_chain(sorted(candidates))


def _monotone_chain(points: Sequence[Point]) -> list[Point]:
    """Andrew's monotone chain on points sorted by (x, y); collinear points are dropped."""
    if len(points) <= 2:
        return list(points)
    lower = _half_hull(points)
    upper = _half_hull(points[::-1])
    return lower[:-1] + upper[:-1]


def _half_hull(points: Sequence[Point]) -> list[Point]:
    chain: list[Point] = []
    for point in points:
        while len(chain) >= 2 and _cross(chain[-2], chain[-1], point) <= 0:
            chain.pop()
        chain.append(point)
    return chain


def _cross(origin: Point, a: Point, b: Point) -> int:
    return (a[0] - origin[0]) * (b[1] - origin[1]) - (a[1] - origin[1]) * (b[0] - origin[0])
