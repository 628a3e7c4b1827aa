"""The wire formats the tracking server and :class:`~loopml.tracking.remote.RemoteStore` speak.

Both ends import this module; it needs only NumPy and orjson (no web
framework, no HTTP client), so the tracking client stays light.

**Non-finite floats.** JSON has no NaN or infinity, so metric values travel
as numbers when finite and as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` otherwise; :func:`encode_float` and :func:`decode_float`
convert exactly (every finite float64 round-trips through orjson's shortest
representation).

**A metrics batch** (``POST /api/v1/metrics``) is columnar JSON with the run
ids and keys dictionary-encoded, so 20,000 points cost one small object and
five flat arrays rather than 20,000 objects::

    {
      "run_ids": ["3fa2c1d0...", "77b1e9aa..."],   # distinct run ids
      "keys": ["loss", "acc"],                     # distinct metric keys
      "run": [0, 0, 1, 1],                         # index into run_ids, per point
      "key": [0, 1, 0, 1],                         # index into keys, per point
      "steps": [0, 0, 0, 0],                       # int64
      "timestamps": [1732000000.0, ...],           # float seconds since the epoch
      "values": [0.5, 0.9, "NaN", "Infinity"]      # float64, non-finite as strings
    }

``run`` (``key``) may be left out when ``run_ids`` (``keys``) has one entry.

**A history** (``GET /api/v1/runs/{id}/history?key=...``) is columnar JSON
(``{"steps": [...], "timestamps": [...], "values": [...]}``) or, with
``format=binary``, the bytes :func:`encode_history` writes: a 16-byte header
(``b"LMLH"``, a little-endian uint32 version, a uint64 count ``n``) and then
``n`` int64 steps, ``n`` float64 timestamps and ``n`` float64 values, all
little-endian. The binary form is exact bit for bit and takes no parsing.

>>> body = encode_metric_batch([("ab12", "loss", 0, 1.0, float("nan"))])
>>> decode_metric_batch(body)[1][0][:4]
('ab12', 'loss', 0, 1.0)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from ..errors import ArgumentError, ArgumentTypeError
from ..store.records import History, RunRecord
from ..store.validation import check_key

# The most points one history request returns (120 MB in the binary format);
# the client pages through longer histories with offset.
MAX_HISTORY_POINTS = 5_000_000

__all__ = [
    "HISTORY_MAGIC",
    "MAX_BATCH_POINTS",
    "MAX_HISTORY_POINTS",
    "MAX_RUN_ID_LENGTH",
    "decode_float",
    "decode_history",
    "decode_metric_batch",
    "encode_float",
    "encode_floats",
    "encode_history",
    "encode_metric_batch",
    "history_from_json",
    "history_to_json",
    "run_from_json",
    "run_to_json",
]

# One request carries at most this many points; RemoteStore splits larger batches.
MAX_BATCH_POINTS = 100_000
# runs.id is a String(32) column
MAX_RUN_ID_LENGTH = 32

HISTORY_MAGIC = b"LMLH"
_HISTORY_VERSION = 1
_HEADER = struct.Struct("<4sIQ")

_NONFINITE_TO_FLOAT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NUMBER_TYPES = frozenset((float, int))


# -- floats ---------------------------------------------------------------


def encode_float(value: float) -> float | str:
    """``value`` itself if finite, else ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    if value - value == 0:
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def encode_floats(values: Sequence[float]) -> list[float | str]:
    """:func:`encode_float` over a sequence, with a fast path when all are finite."""
    try:
        total = sum(values)  # NaN and infinities propagate through a sum
    except TypeError:
        total = math.nan
    if total - total == 0:  # finite sum: no element is NaN or infinite
        return list(values)
    return [v if v - v == 0 else encode_float(v) for v in values]


def decode_float(value: Any, *, what: str = "value") -> float:
    """The float a JSON value stands for; accepts numbers and the three non-finite strings."""
    t = type(value)
    if t is float:
        return float(value)  # already a float: the type() test keeps subclasses (bool) out
    if t is int:
        return float(value)
    if t is str:
        try:
            return _NONFINITE_TO_FLOAT[value]
        except KeyError:
            pass
    raise ArgumentError(
        f"Argument {what} should be a number or one of 'NaN', 'Infinity', '-Infinity', "
        f"got {type(value).__name__}: {value!r:.60}"
    )


# -- metric batches -------------------------------------------------------


def encode_metric_batch(points: Sequence[tuple[str, str, int, float, float]]) -> bytes:
    """The JSON body of ``POST /api/v1/metrics`` for ``(run_id, key, step, timestamp, value)`` points."""
    if not points:
        return orjson.dumps({"run_ids": [], "keys": [], "steps": [], "timestamps": [], "values": []})
    # column by column: zip(*points) is several times slower on long batches
    rids, keys, steps, timestamps, values = (list(map(itemgetter(i), points)) for i in range(5))
    run_ids = list(dict.fromkeys(rids))
    key_names = list(dict.fromkeys(keys))
    doc: dict[str, Any] = {
        "run_ids": run_ids,
        "keys": key_names,
        "steps": steps,
        "timestamps": timestamps,
        "values": encode_floats(values),
    }
    if len(run_ids) > 1:
        doc["run"] = list(map({r: i for i, r in enumerate(run_ids)}.__getitem__, rids))
    if len(key_names) > 1:
        doc["key"] = list(map({k: i for i, k in enumerate(key_names)}.__getitem__, keys))
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _column(doc: dict[str, Any], name: str) -> list[Any]:
    col = doc.get(name)
    if not isinstance(col, list):
        raise ArgumentTypeError(
            f"Field {name!r} of the metrics batch should be an array, got {type(col).__name__}; "
            'send {"run_ids": [...], "keys": [...], "steps": [...], "timestamps": [...], "values": [...]}'
        )
    return col


def _index_column(doc: dict[str, Any], name: str, table: list[str], n: int) -> list[int] | None:
    """The per-point index array ``name`` into ``table``; None when ``table`` has one entry and it is absent."""
    if name not in doc and len(table) == 1:
        return None
    idx = _column(doc, name)
    if len(idx) != n:
        raise ArgumentError(f"Field {name!r} of the metrics batch should have {n} entries (one per point), got {len(idx)}")
    if n and (set(map(type, idx)) != {int} or min(idx) < 0 or max(idx) >= len(table)):
        raise ArgumentError(f"Field {name!r} of the metrics batch should hold integers from 0 to {len(table) - 1}")
    return idx


def decode_metric_batch(body: bytes) -> tuple[list[str], list[tuple[str, str, int, float, float]]]:
    """Parse and check a metrics batch; returns the distinct run ids and the points.

    Raises ``orjson.JSONDecodeError`` for bytes that are not JSON and
    ``ValueError`` (or ``TypeError``) naming the field for anything else wrong.
    """
    doc = orjson.loads(body)
    if not isinstance(doc, dict):
        raise ArgumentTypeError(f"The metrics batch should be a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - {"run_ids", "keys", "run", "key", "steps", "timestamps", "values"}
    if unknown:
        raise ArgumentError(f"The metrics batch has unknown fields: {', '.join(sorted(unknown))}")
    run_ids, keys = _column(doc, "run_ids"), _column(doc, "keys")
    steps, timestamps, values = _column(doc, "steps"), _column(doc, "timestamps"), _column(doc, "values")
    n = len(steps)
    if len(timestamps) != n or len(values) != n:
        raise ArgumentError(
            f"Fields steps, timestamps and values of the metrics batch should have the same length, "
            f"got {n}, {len(timestamps)} and {len(values)}"
        )
    if n > MAX_BATCH_POINTS:
        raise ArgumentError(f"A metrics batch should hold at most {MAX_BATCH_POINTS} points, got {n}; split it")
    if n == 0:
        return [], []
    for rid in run_ids:
        if not isinstance(rid, str) or not rid or len(rid) > MAX_RUN_ID_LENGTH:
            raise ArgumentError(
                f"Field run_ids of the metrics batch should hold run ids (strings of 1 to 32 characters), got {rid!r:.60}"
            )
    for k in keys:
        check_key(k, what="metric key")
    run_idx = _index_column(doc, "run", run_ids, n)
    key_idx = _index_column(doc, "key", keys, n)

    step_types = set(map(type, steps))
    if step_types != {int}:
        bad = next(s for s in steps if type(s) is not int)
        raise ArgumentError(f"Argument step should be an integer (int64), got {type(bad).__name__}: {bad!r:.60}")
    if min(steps) < _INT64_MIN or max(steps) > _INT64_MAX:
        raise ArgumentError(
            f"Argument step should be an integer (int64), got {max(steps) if max(steps) > _INT64_MAX else min(steps)}"
        )
    ts_types = set(map(type, timestamps))
    if not ts_types <= _NUMBER_TYPES:  # JSON numbers are always finite
        bad = next(t for t in timestamps if type(t) not in _NUMBER_TYPES)
        raise ArgumentError(f"Argument timestamp should be a number of seconds, got {type(bad).__name__}: {bad!r:.60}")
    value_types = set(map(type, values))
    if value_types == {float}:
        vals: list[float] = values
    elif value_types <= _NUMBER_TYPES:
        vals = [float(v) for v in values]
    else:
        vals = [decode_float(v, what="value") for v in values]

    run_col: Any = map(run_ids.__getitem__, run_idx) if run_idx is not None else repeat(run_ids[0], n)
    key_col: Any = map(keys.__getitem__, key_idx) if key_idx is not None else repeat(keys[0], n)
    ts_col: Any = map(float, timestamps) if int in ts_types else timestamps
    return list(dict.fromkeys(run_ids)), list(zip(run_col, key_col, steps, ts_col, vals))


# -- histories ------------------------------------------------------------


def encode_history(history: History) -> bytes:
    """The binary form of a history (see the module docstring)."""
    n = len(history.steps)
    return b"".join(
        (
            _HEADER.pack(HISTORY_MAGIC, _HISTORY_VERSION, n),
            np.ascontiguousarray(history.steps, dtype="<i8").tobytes(),
            np.ascontiguousarray(history.timestamps, dtype="<f8").tobytes(),
            np.ascontiguousarray(history.values, dtype="<f8").tobytes(),
        )
    )


def decode_history(data: bytes) -> History:
    """Read what :func:`encode_history` wrote; raises ValueError on anything else."""
    if len(data) < _HEADER.size:
        raise ArgumentError(f"A binary history should start with a {_HEADER.size}-byte header, got {len(data)} bytes")
    magic, version, n = _HEADER.unpack_from(data)
    if magic != HISTORY_MAGIC or version != _HISTORY_VERSION:
        raise ArgumentError(f"Not a loopml binary history (version {_HISTORY_VERSION}): header {data[:8]!r}")
    if len(data) != _HEADER.size + 24 * n:
        raise ArgumentError(f"A binary history of {n} points should have {_HEADER.size + 24 * n} bytes, got {len(data)}")
    o = _HEADER.size
    steps = np.frombuffer(data, dtype="<i8", count=n, offset=o).astype(np.int64)
    timestamps = np.frombuffer(data, dtype="<f8", count=n, offset=o + 8 * n).astype(np.float64)
    values = np.frombuffer(data, dtype="<f8", count=n, offset=o + 16 * n).astype(np.float64)
    return History(steps, timestamps, values)


def history_to_json(history: History) -> dict[str, list[Any]]:
    """``{"steps", "timestamps", "values"}`` with non-finite values as strings."""
    return {
        "steps": history.steps.tolist(),
        "timestamps": history.timestamps.tolist(),
        "values": encode_floats(history.values.tolist()),
    }


def history_from_json(doc: dict[str, list[Any]]) -> History:
    return History(
        np.asarray(doc["steps"], dtype=np.int64),
        np.asarray(doc["timestamps"], dtype=np.float64),
        np.asarray([decode_float(v) for v in doc["values"]], dtype=np.float64),
    )


# -- runs -----------------------------------------------------------------

_SUMMARY_FLOATS = ("value", "min", "max")


def run_to_json(record: RunRecord) -> dict[str, Any]:
    """``record.to_dict()`` with the metric summaries' non-finite floats as strings."""
    d = record.to_dict()
    for m in d["metrics"].values():
        for f in _SUMMARY_FLOATS:
            m[f] = encode_float(m[f])
    return d


def run_from_json(d: dict[str, Any]) -> RunRecord:
    """The inverse of :func:`run_to_json`."""
    d = dict(d)
    metrics = {}
    for k, m in (d.get("metrics") or {}).items():
        m = dict(m)
        for f in _SUMMARY_FLOATS:
            m[f] = decode_float(m[f])
        metrics[k] = m
    d["metrics"] = metrics
    return RunRecord.from_dict(d)
