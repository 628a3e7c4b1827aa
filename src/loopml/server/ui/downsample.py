"""Downsampling a metric history for display: min and max per bucket, vectorised.

A chart is a few thousand pixels wide, so drawing 100,000 points shows no
more than drawing the extremes of each pixel column. :func:`minmax_indices`
splits the points (in their stored order) into ``buckets`` runs of equal
length and keeps, of each, the point with the smallest and the one with the
largest value, plus the very first and last points. Spikes survive (unlike
averaging or taking every n-th point) and the result has at most
``2 * buckets + 2`` points. The exact points stay downloadable (CSV/JSON).

>>> import numpy as np
>>> v = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
>>> minmax_indices(v, buckets=2).tolist()
[0, 1, 2, 5, 6, 7]

NaN is never chosen as a bucket's min or max unless the whole bucket is NaN;
``inf`` and ``-inf`` are extremes like any other value.
"""

from __future__ import annotations

import numpy as np
from ...errors import ArgumentError

__all__ = ["DEFAULT_POINTS", "MAX_POINTS", "minmax_indices"]

DEFAULT_POINTS = 2_000  # about two points per pixel column of a wide chart
MAX_POINTS = 20_000


def minmax_indices(values: np.ndarray, buckets: int) -> np.ndarray:
    """Sorted indices of the points to draw: each bucket's min and max, the first and the last point.

    ``values``: one metric's values in their stored order. With no more than
    ``2 * buckets`` points, every index is returned.
    """
    if not isinstance(buckets, int) or buckets < 1:
        raise ArgumentError(f"Argument buckets should be a positive integer, got {buckets!r}")
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n <= 2 * buckets:
        return np.arange(n, dtype=np.int64)
    size = -(-n // buckets)  # ceil: every bucket but the last holds `size` points
    count = -(-n // size)
    padded = count * size - n
    grid = np.concatenate([values, np.full(padded, np.nan)]).reshape(count, size)  # padding is NaN
    real = ~np.isnan(grid)
    offsets = np.arange(count, dtype=np.int64) * size
    picked = [np.array([0, n - 1])]
    for reduce, fill in ((np.min, np.inf), (np.max, -np.inf)):
        # NaN never wins: the first real point equal to the bucket's extreme (inf included);
        # a bucket of NaN only keeps its first point, a gap in the line
        extreme = reduce(np.where(real, grid, fill), axis=1)
        hit = real & (grid == extreme[:, None])
        picked.append(offsets + np.argmax(hit, axis=1))
    return np.unique(np.concatenate(picked))
