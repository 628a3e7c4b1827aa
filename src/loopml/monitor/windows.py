"""What a served version answered, window by window: requests, abstentions, confidence, and drift of its predictions.

Read from the model server's own request log (the ``predictions`` table), no glue::

    from loopml.monitor.windows import prediction_windows

    w = prediction_windows("digits", 3, every="1h", since="24h")
    w[["window_start", "requests", "abstention_rate", "mean_confidence", "prediction_drifted"]]

One row per window (by time with ``every=``, or by count with ``size=`` requests):

- ``requests``, ``rows`` (input rows answered), ``abstained`` (rows the OOD gate
  refused) and ``abstention_rate`` = abstained / rows;
- ``mean_confidence``: the mean top-class probability of the rows answered with
  probabilities (a classifier); NaN otherwise;
- ``classes``: the predicted classes' counts, and the drift of that distribution
  against a reference: by default the class balance of the version's training
  data (its stored profile), else the first window. A window's predictions
  drifted when Pearson's chi-square test against the reference's proportions
  gives ``p < alpha`` (0.01) **and** the Jensen-Shannon distance (base 2, 0-1)
  between the two distributions is at least ``min_js`` (0.1): a large log makes
  any difference significant, so a difference also has to be big enough to
  matter. A window with fewer than ``min_rows`` answered rows (100) is
  reported with ``prediction_drifted`` = None ("not enough data"), never as a
  false alarm.

The chi-square statistic and p-value are SciPy's (``scipy.stats.chisquare``);
the Jensen-Shannon distance is ``scipy.spatial.distance.jensenshannon``.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import ArgumentError, ArgumentTypeError, NotFound
from ..store.monitoring import MonitorLog
from ..store.predictions import PredictionLog
from ..store.registry import RegistryStore
from ..tracking.api import database_for

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["abstained_rows", "answer_rows", "class_balance", "parse_duration", "prediction_windows", "split_windows", "summarize_answers"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(value: float | int | str, what: str) -> float:
    """Seconds from ``90``, ``"30s"``, ``"5m"``, ``"1h"`` or ``"7d"``.

    >>> parse_duration("5m", "every"), parse_duration(90, "every")
    (300.0, 90.0)
    """
    if isinstance(value, bool):
        raise ArgumentTypeError(f"Argument {what} should be a duration like '5m', '1h' or a number of seconds; got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ArgumentError(f"Argument {what} should be a duration like '30s', '5m', '1h', '7d' or a number of seconds; got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ArgumentError(f"Argument {what} should be a positive duration; got {value!r}")
    return seconds


def split_windows(
    per: str | float | None, since: float | None, until: float | None
) -> Callable[[np.ndarray], list[tuple[float, float, np.ndarray]]]:
    """``per`` checked, as a function from sorted times to ``(start, end, positions)`` per non-empty window.

    ``per``: None (one window), a count of rows (an int: the last window may be short; it
    ends at its last row's time) or a duration (``"1h"``, seconds): windows of that width
    from ``since`` (default: the first time). The one windowing of the monitor's tables.

    >>> [(a, b, i.tolist()) for a, b, i in split_windows(2, None, None)(np.array([0.0, 1.0, 5.0]))]
    [(0.0, 1.0, [0, 1]), (5.0, 5.0, [2])]
    """
    if per is not None and (isinstance(per, bool) or not isinstance(per, (str, int, float))):
        raise ArgumentTypeError(f"Argument per should be None, a row count such as 500, or a duration such as '1h'; got {per!r}")
    if isinstance(per, int) and per < 1:
        raise ArgumentError(f"Argument per should be a row count of at least 1 or a duration such as '1h'; got {per!r}")
    width = parse_duration(per, "per") if per is not None and not isinstance(per, int) else math.nan

    def split(t: np.ndarray) -> list[tuple[float, float, np.ndarray]]:
        if not len(t):
            return []
        if per is None:
            return [(float(t[0]) if since is None else float(since), float(t[-1]) if until is None else float(until),
                     np.arange(len(t)))]
        if isinstance(per, int):
            return [(float(t[i]), float(t[min(i + per, len(t)) - 1]), np.arange(i, min(i + per, len(t))))
                    for i in range(0, len(t), per)]
        origin = float(t[0]) if since is None else float(since)
        bins = np.floor((t - origin) / width).astype(np.int64)
        return [(origin + b * width, origin + (b + 1) * width, np.flatnonzero(bins == b)) for b in np.unique(bins)]

    return split


def _rows_of(outputs: str) -> list[dict[str, Any]]:
    doc = orjson.loads(outputs)
    return list(doc["results"]) if "results" in doc else [doc]


def _reference_from_profile(profile: Mapping[str, Any] | None) -> dict[str, float] | None:
    target = (profile or {}).get("target") or {}
    fractions = target.get("fractions") if target.get("type") == "classification" else None
    return {str(k): float(v) for k, v in fractions.items()} if fractions else None


def _compare(counts: Counter[str], reference: Mapping[str, float], alpha: float, min_js: float) -> tuple[float, float, bool]:
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chisquare

    classes = sorted(set(reference) | set(counts))
    observed = np.array([counts.get(c, 0) for c in classes], dtype=np.float64)
    expected_p = np.array([reference.get(c, 0.0) for c in classes], dtype=np.float64)
    # a class the reference never had gets a small share (half a count) instead of a division by zero
    floor = 0.5 / max(observed.sum(), 1.0)
    expected_p = np.where(expected_p > 0, expected_p, floor)
    expected_p /= expected_p.sum()
    n = observed.sum()
    result = chisquare(observed, expected_p * n)
    p = float(result.pvalue)
    js = float(jensenshannon(observed / n, expected_p, base=2))
    return p, js, bool(p < alpha and js >= min_js)


def class_balance(profile: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The class proportions of a version's training data from its stored profile; None for a regressor or none.

    >>> class_balance({"target": {"type": "classification", "fractions": {"a": 0.25, "b": 0.75}}})
    {'a': 0.25, 'b': 0.75}
    """
    return _reference_from_profile(profile)


def summarize_answers(records: Sequence[Mapping[str, Any]], *, reference: Mapping[str, float] | None,
                      alpha: float = 0.01, min_js: float = 0.1, min_rows: int = 100,
                      scores: np.ndarray | None = None, min_score_effect: float = 0.05) -> dict[str, Any]:
    """One window's row of :func:`prediction_windows` from its records (``rows`` and ``outputs`` of each).

    ``requests``, ``rows``, ``abstained``, ``abstention_rate``, ``mean_confidence``,
    ``classes`` and the drift of the classes against ``reference`` (None: not tested).
    With ``scores`` (the validation split's top-class probabilities), the drift of the
    window's top-class probabilities too: SciPy's two-sample KS test (``p < alpha``)
    **and** a Wasserstein distance of at least ``min_score_effect`` validation sds, as
    for a numeric input column (``confidence_drift_p``, ``confidence_drift_effect``,
    ``confidence_drifted``; None below ``min_rows`` answers or without ``scores``).
    """
    counts: Counter[str] = Counter()
    rows = abstained = 0
    confidences: list[float] = []
    for rec in records:
        rows += int(rec["rows"])
        for item in _rows_of(rec["outputs"]):
            if item.get("status") == "abstain":
                abstained += 1
                continue
            pred = item.get("prediction")
            if isinstance(pred, (str, int)) and not isinstance(pred, bool):
                counts[str(pred)] += 1
            probs = item.get("probabilities")
            if isinstance(probs, list) and probs:
                confidences.append(float(max(probs)))
    answered = sum(counts.values())
    p = js = math.nan
    drifted: bool | None = None
    if reference and answered >= min_rows:
        p, js, drifted = _compare(counts, reference, alpha, min_js)
    score_p = score_effect = math.nan
    score_drifted: bool | None = None
    if scores is not None and len(scores) > 1 and len(confidences) >= min_rows:
        score_p, score_effect, score_drifted = _compare_scores(np.asarray(confidences), np.asarray(scores), alpha,
                                                               min_score_effect)
    return {
        "requests": len(records), "rows": rows, "abstained": abstained,
        "abstention_rate": abstained / rows if rows else math.nan,
        "mean_confidence": float(np.mean(confidences)) if confidences else math.nan,
        "classes": dict(sorted(counts.items())),
        "prediction_drift_p": p, "prediction_drift_js": js, "prediction_drifted": drifted,
        "confidence_drift_p": score_p, "confidence_drift_effect": score_effect, "confidence_drifted": score_drifted,
    }


def _compare_scores(current: np.ndarray, reference: np.ndarray, alpha: float, min_effect: float) -> tuple[float, float, bool]:
    from scipy.stats import ks_2samp, wasserstein_distance

    sd = float(np.std(reference, ddof=1))
    p = float(ks_2samp(current, reference, method="asymp").pvalue)
    effect = float(wasserstein_distance(current, reference)) / sd if sd > 0 else math.inf
    return p, effect, bool(p < alpha and effect >= min_effect)


def answer_rows(outputs: str) -> list[dict[str, Any]]:
    """The answered rows of one logged answer (a batch's ``results``, or the single answer itself)."""
    return _rows_of(outputs)


def abstained_rows(records: Sequence[Mapping[str, Any]]) -> int:
    """The rows the OOD gate refused in these records (their ``outputs``)."""
    return sum(1 for rec in records for item in _rows_of(rec["outputs"]) if item.get("status") == "abstain")


def prediction_windows(
    model: str,
    version: int | None = None,
    *,
    every: float | str | None = "1h",
    size: int | None = None,
    since: float | str | None = None,
    until: float | None = None,
    reference: Mapping[str, float] | None = None,
    alpha: float = 0.01,
    min_js: float = 0.1,
    min_rows: int = 100,
    store: bool = False,
    tracking_uri: str | None = None,
) -> "pd.DataFrame":
    """The request log of ``model`` (one ``version``, or all) per window; see the module docstring.

    ``since``: a time (epoch seconds) or a duration back from now (``"24h"``).
    ``size``: windows of that many requests instead of ``every``. ``reference``:
    class proportions to compare the predictions with (default: the version's
    training class balance). ``store=True`` also saves each window's result in the
    store (``kind="predictions"``) for the UI and alerts.
    """
    import pandas as pd

    backend = database_for(tracking_uri, "Reading the request log")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ArgumentError(f"Argument size should be a number of requests >= 1; got {size!r}")
        width = None
    else:
        width = parse_duration(every if every is not None else "1h", "every")
    if not 0 < alpha < 1:
        raise ArgumentError(f"Argument alpha should be a probability between 0 and 1, e.g. 0.01; got {alpha!r}")
    start = time.time() - parse_duration(since, "since") if isinstance(since, str) else since
    records = PredictionLog(backend).answers(model, version, since=start, until=until)
    if reference is None and version is not None:
        try:
            reference = _reference_from_profile(RegistryStore(backend).get_version(model, int(version)).profile)
        except NotFound:
            reference = None
    times = np.array([r["created_at"] for r in records], dtype=np.float64)
    windows = split_windows(size if size is not None else width, start, until)(times)

    out: list[dict[str, Any]] = []
    first: Counter[str] | None = None
    for w_start, w_end, positions in windows:
        ref = reference
        if ref is None and first is not None:
            total = sum(first.values())
            ref = {k: v / total for k, v in first.items()} if total else None
        summary = summarize_answers([records[i] for i in positions], reference=ref, alpha=alpha, min_js=min_js,
                                    min_rows=min_rows)
        counts = Counter(summary["classes"])
        if first is None and counts:
            first = counts
        row = {"window_start": w_start, "window_end": w_end, **summary}
        drifted = row["prediction_drifted"]
        rows = row["rows"]
        out.append(row)
        if store and version is not None:
            # here, not at import time: .stats imports scipy.stats, and loopml.client (every CLI command) imports this module
            from .stats import json_scalar

            payload = {k: json_scalar(v) for k, v in row.items()}
            MonitorLog(backend).save_result(model, int(version), "predictions", window=(w_start, w_end),
                            rows=rows, flagged=drifted, payload=payload)
    columns = ["window_start", "window_end", "requests", "rows", "abstained", "abstention_rate", "mean_confidence",
               "classes", "prediction_drift_p", "prediction_drift_js", "prediction_drifted"]
    return pd.DataFrame(out, columns=columns)
