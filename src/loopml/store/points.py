"""Metric points stored as blocks: one row per (run, key) per written batch.

A logged point is (run, key, step, timestamp, value). Storing a row per point
made the database the bottleneck (SQLite: 0.22 s to insert 100,000 rows with
their index, 0.07 s to read them back as Python tuples). The background
writer already batches points, so each batch becomes, per (run, key), one
row of ``metric_blocks`` whose ``data`` holds three little-endian arrays::

    n int64 steps | n float64 timestamps | n float64 values

Values keep every bit (NaN, +/-inf, -0.0), which SQLite's REAL column could
not. A history is the blocks of one (run, key) in the order they were
written, concatenated and stably sorted by step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .records import History

__all__ = ["Block", "decode_history", "encode_blocks"]

_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")

# (run_id, key, n, min_step, max_step, data) plus the summary that feeds latest_metrics
Block = dict[str, Any]


def encode_blocks(points: Sequence[tuple[str, str, int, float, float]]) -> tuple[list[Block], list[Block]]:
    """Group a batch of points by (run, key): the block rows and the latest_metrics rows.

    The summary row has the newest point (largest step; the last logged among
    equal steps), min and max ignoring NaN (None if only NaN) and the count.
    """
    groups: dict[tuple[str, str], tuple[list[int], list[float], list[float]]] = {}
    for run_id, key, step, timestamp, value in points:
        g = groups.get((run_id, key))
        if g is None:
            g = groups[(run_id, key)] = ([], [], [])
        g[0].append(step)
        g[1].append(timestamp)
        g[2].append(value)
    blocks: list[Block] = []
    latest: list[Block] = []
    for (run_id, key), (steps_l, ts_l, values_l) in groups.items():
        steps = np.array(steps_l, dtype=_I8)
        ts = np.array(ts_l, dtype=_F8)
        values = np.array(values_l, dtype=_F8)
        n = len(steps)
        blocks.append(
            {
                "run_id": run_id,
                "key": key,
                "n": n,
                "min_step": int(steps.min()),
                "max_step": int(steps.max()),
                "data": steps.tobytes() + ts.tobytes() + values.tobytes(),
            }
        )
        last = n - 1 - int(np.argmax(steps[::-1]))  # the last logged of the largest step
        finite = values[~np.isnan(values)]
        latest.append(
            {
                "run_id": run_id,
                "key": key,
                "step": int(steps[last]),
                "timestamp": float(ts[last]),
                "value": None if np.isnan(values[last]) else float(values[last]),
                "min_value": float(finite.min()) if finite.size else None,
                "max_value": float(finite.max()) if finite.size else None,
                "count": n,
            }
        )
    return blocks, latest


def decode_history(blobs: Iterable[bytes]) -> History:
    """One History from the blocks of a (run, key), in the order they were written."""
    steps, ts, values = [], [], []
    for blob in blobs:
        n = len(blob) // 24
        buf = memoryview(blob)
        steps.append(np.frombuffer(buf[: 8 * n], dtype=_I8))
        ts.append(np.frombuffer(buf[8 * n : 16 * n], dtype=_F8))
        values.append(np.frombuffer(buf[16 * n :], dtype=_F8))
    if not steps:
        return History(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.float64))
    s = np.concatenate(steps).astype(np.int64, copy=False)
    t = np.concatenate(ts).astype(np.float64, copy=False)
    v = np.concatenate(values).astype(np.float64, copy=False)
    if s.size > 1 and np.any(s[1:] < s[:-1]):
        order = np.argsort(s, kind="stable")  # by step, then in the order logged
        s, t, v = s[order], t[order], v[order]
    return History(s, t, v)
