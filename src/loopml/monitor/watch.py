"""Scheduled monitoring: one cycle over the newest window of a served version's request log, stored, alerts checked.

:func:`check` runs one cycle for the version a reference points at *now*
(``"digits@production"`` follows the alias; ``"digits/3"``, ``"digits"``) over the
newest window of its request log (``window="5m"``: the last five minutes;
``last=N``: the newest N requests) and stores one result per kind in the store
(:class:`~loopml.store.monitoring.MonitorLog`), all with the same window:

- ``"predictions"``: requests, rows, abstentions, mean confidence and the drift of
  the predicted classes (a :func:`~loopml.monitor.windows.prediction_windows` row);
- ``"drift"``: the window's logged inputs against the version's training inputs
  (:func:`loopml.monitor.drift`); the payload is the report's ``to_dict()`` without
  its histograms, with ``share_drifted`` (drifted features / features) and
  ``status`` ``"ok"``; ``flagged`` is ``report.drifted``. A window with fewer than
  ``min_rows`` (100) logged input rows, or a version without stored training data, is
  stored as ``{"status": "not enough data", "reason": ...}`` with ``flagged`` None;
- ``"performance"``: ``accuracy`` from feedback labels joined by request id (with its
  Wilson interval ``accuracy_low``, ``accuracy_high`` and the ``labelled`` count),
  ``estimated_accuracy`` without labels (CBPE's isotonic estimate, calibrated once per version on its
  validation split: :func:`~loopml.monitor.performance.calibrate_version`) and
  ``abstention_rate``; None where it cannot be had (no label, no calibration).

A cycle's work is bounded, whatever the traffic (:func:`sample_window`): the sums
(requests, rows, abstentions, kept inputs) are exact SQL aggregates over the whole
window, accuracy joins every labelled request, and what decodes each request (the
logged inputs for drift; the classes and probabilities for the prediction drift,
the confidence and the estimate) reads a seeded uniform sample of at most
``max_requests`` (:data:`MAX_REQUESTS`) requests of the window. Each payload
records ``sampled`` requests ``of`` how many.

Then the alert rules are checked (:func:`loopml.monitor.alerts.evaluate`) with
``drift`` (the share of drifted features), ``accuracy``, ``estimated_accuracy`` and
``abstention_rate``. A metric computed on fewer than ``min_rows`` rows (labelled rows
for accuracy) is left out: not enough data fires nothing, never a false alarm.

:func:`watch` runs :func:`check` every ``every`` until stopped (a ``stop`` event,
``cycles``, or Ctrl-C); a cycle that fails is logged and the next one runs.
``loopml monitor watch NAME@ALIAS --every 5m`` and ``loopml serve --monitor`` run it.

>>> from loopml.monitor.watch import check
>>> result = check("digits@production", window="1h")     # nothing served yet: nothing to alert on
>>> sorted(result.stored), result.values["drift"], result.notes["drift"]
(['drift', 'performance', 'predictions'], None, '0 logged input rows in the window, at least 100 needed')
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, LoopMLError, NotFound
from ..store.monitoring import MonitorLog
from ..store.predictions import PredictionLog, stack_inputs
from ..store.registry import RegistryStore
from ..tracking.api import database_for
from .performance import calibrate_version, estimated_accuracy, live_accuracy
from .stats import json_scalar
from .windows import (
    abstained_rows,
    answer_rows,
    class_balance,
    parse_duration,
    summarize_answers,
)

if TYPE_CHECKING:
    from ..store.reference import DriftReference
    from ..store.registry import ModelVersion
    from ..store.tracking import TrackingStore
    from .alerts import Alert
    from .performance import ConfidenceCalibration

__all__ = ["DELAY", "MAX_REQUESTS", "MIN_ROWS", "CheckResult", "Watcher", "WatchSummary", "check", "watch"]

MIN_ROWS = 100
"""Rows a metric needs in a window before it is measured for alerts (and drift at all): the
``prediction_windows`` minimum, and enough for the drift tests' 30 values a side with room to spare."""

MAX_REQUESTS = 5_000
"""Requests a cycle reads and decodes at most per sample (answers; logged inputs), drawn uniformly from the window.

A cycle's cost then stops growing with the traffic (about 60 us a decoded request: 0.3 s at this size,
where 84,661 requests took 46.69 s). The drift tests keep their power at this size: a 0.1 sd shift of one
column of 20 (twice ``univariate.MIN_EFFECT``) was flagged in 94% of 5,000-row samples (1% false alarms),
in 30% of 1,000-row ones (benchmarks/monitor_sample_power.py, docs/benchmarks.md)."""

DELAY = 2.0
"""Seconds a scheduled window ends before its cycle: the request log's writer has written it by then."""

KINDS = ("predictions", "drift", "performance")
NOT_ENOUGH = "not enough data"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """What one cycle measured and stored: the version, the window, the alert values, the stored ids, what fired.

    ``values`` holds the four alert metrics (None: not enough data, nothing fires);
    ``stored`` the id of each kind's stored result; ``notes`` why a metric is None;
    ``seconds`` how long the cycle took.
    """

    model: str
    version: int
    window: tuple[float, float]
    requests: int
    rows: int
    values: dict[str, float | None]
    stored: dict[str, int]
    alerts: list["Alert"] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ref(self) -> str:
        return f"{self.model}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what ``loopml monitor watch --json`` prints, one line per cycle."""
        return {
            "model": self.model, "version": self.version, "window_start": self.window[0], "window_end": self.window[1],
            "requests": self.requests, "rows": self.rows, "values": dict(self.values), "stored": dict(self.stored),
            "notes": dict(self.notes), "seconds": self.seconds, "alerts": [{"rule": a.rule, "metric": a.metric, "value": a.value, "message": a.message,
                                                   "delivered": a.delivered} for a in self.alerts],
        }

    def summary(self) -> str:
        """One line: the version, its requests, each metric (or why not), the alerts fired."""
        def pct(key: str) -> str:
            v = self.values.get(key)
            return "-" if v is None else f"{v:.1%}"

        def num(key: str) -> str:
            v = self.values.get(key)
            return "-" if v is None else f"{v:.3f}"

        parts = [f"{self.ref}: {self.requests:,} requests ({self.rows:,} rows)", f"drift {pct('drift')}",
                 f"accuracy {num('accuracy')}", f"estimated {num('estimated_accuracy')}", f"abstained {pct('abstention_rate')}"]
        fired = f"{len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''}"
        if self.alerts:
            fired += ": " + "; ".join(a.message for a in self.alerts)
        return ", ".join(parts) + f"; {fired} ({self.seconds:.2f} s)"


@dataclass
class WindowSample:
    """A window read with bounded work: exact ``counts`` (SQL sums), and uniform samples of its requests.

    ``answers``: at most ``max_requests`` records drawn from the window's ``counts["requests"]``;
    ``inputs``: at most ``max_requests`` records with kept inputs, drawn from ``counts["input_requests"]``
    (the same records when every request kept its inputs). ``abstained``: the window's abstained rows,
    exact unless ``abstained_exact`` is False (more than ``max_requests`` abstaining batches: estimated
    from a sample of them).
    """

    counts: dict[str, int]
    answers: list[dict[str, Any]]
    inputs: list[dict[str, Any]]
    abstained: int
    abstained_exact: bool = True


def _draw(ids: list[str], n: int, seed: int) -> list[str]:
    """At most ``n`` of ``ids``, uniformly without replacement (a seeded generator), in their order."""
    if len(ids) <= n:
        return ids
    pick = np.sort(np.random.default_rng(seed).choice(len(ids), size=n, replace=False))
    return [ids[i] for i in pick]


def sample_window(log: PredictionLog, model: str, version: int, *, since: float | None, until: float | None,
                  max_requests: int = MAX_REQUESTS, seed: int = 0) -> WindowSample:
    """A window of the request log read with bounded work (see :class:`WindowSample`).

    The counts are one SQL aggregate; the request ids are read (no blob) and sampled in NumPy; only the
    chosen records' answers and inputs are read, ``500`` ids per short read transaction.
    """
    counts = log.window_counts(model, version, since=since, until=until)
    ids = log.window_ids(model, version, since=since, until=until)
    every_input = counts["input_requests"] == counts["requests"]
    chosen = _draw(ids, max_requests, seed)
    answers = log.records(chosen, inputs=every_input)
    if every_input:
        inputs = [r for r in answers if r["inputs"] is not None]
    elif counts["input_requests"]:
        kept = log.window_ids(model, version, since=since, until=until, with_inputs=True)
        inputs = log.records(_draw(kept, max_requests, seed))
    else:
        inputs = []
    abstained, exact = counts["abstained_single"], True
    if counts["abstaining"] > counts["abstained_single"]:  # batches with an abstained row: their outputs say how many
        batches = log.window_ids(model, version, since=since, until=until, abstained_batches=True)
        picked = _draw(batches, max_requests, seed)
        found = abstained_rows(log.records(picked, inputs=False))
        exact = len(picked) == len(batches)
        abstained += found if exact else round(found * len(batches) / len(picked))
    return WindowSample(counts, answers, inputs, abstained, exact)


@dataclass
class WatchSummary:
    """What :func:`watch` did: cycles run, cycles that failed, alerts fired, and whether Ctrl-C ended it."""

    cycles: int = 0
    failures: int = 0
    alerts: int = 0
    interrupted: bool = False

    def line(self) -> str:
        return (f"stopped after {self.cycles} cycle{'s' if self.cycles != 1 else ''} ({self.failures} failed), "
                f"{self.alerts} alert{'s' if self.alerts != 1 else ''} fired")


def _check_rows(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"Argument {what} should be a whole number of at least 1, like 100; got {value!r}")
    return value




class Watcher:
    """Runs :func:`check` cycles for one reference, keeping what does not change per version between cycles.

    The version's training inputs (the drift reference) and its confidence
    calibration are read once per version, not once per cycle. Arguments as :func:`check`.

    >>> w = Watcher("digits@production", window="5m")
    >>> first, second = w.check(), w.check()      # the second reuses the reference and the calibration
    """

    def __init__(self, ref: str, *, window: float | str | None = "5m", last: int | None = None,
                 min_rows: int = MIN_ROWS, multivariate: bool | None = None, alpha: float = 0.05, cooldown: float = 3600.0,
                 delay: float = 0.0, max_requests: int = MAX_REQUESTS, seed: int = 0,
                 tracking_uri: str | None = None) -> None:
        if not isinstance(ref, str) or not ref:
            raise ArgumentTypeError(f"Argument ref should be a version reference like 'digits@production' or 'digits/3'; got {ref!r}")
        if last is not None:
            _check_rows(last, "last")
            self.width: float | None = None
        else:
            self.width = parse_duration(window if window is not None else "5m", "window")
        if multivariate is not None and not isinstance(multivariate, bool):
            raise ArgumentTypeError(f"Argument multivariate should be True, False or None (whenever the reference "
                                    f"has rows); got {multivariate!r}")
        if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or not cooldown >= 0:
            raise ArgumentError(f"Argument cooldown should be a number of seconds >= 0, like 3600; got {cooldown!r}")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay < math.inf:
            raise ArgumentError(f"Argument delay should be a number of seconds >= 0, like 2.0; got {delay!r}")
        self.ref = ref
        self.last = last
        self.delay = float(delay)
        self.min_rows = _check_rows(min_rows, "min_rows")
        self.max_requests = _check_rows(max_requests, "max_requests")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ArgumentError(f"Argument seed should be a whole number >= 0, like 0; got {seed!r}")
        self.seed = seed
        self.multivariate = multivariate
        self.alpha = alpha
        self.cooldown = float(cooldown)
        self.tracking_uri = tracking_uri
        self._references: dict[tuple[str, int], "DriftReference | np.ndarray | str"] = {}
        self._calibrations: dict[tuple[str, int], "ConfidenceCalibration | str"] = {}
        self._balances: dict[tuple[str, int], dict[str, float] | None] = {}

    # -- the pieces -------------------------------------------------------------------

    def _store(self) -> "TrackingStore":
        return database_for(self.tracking_uri, "Monitoring a version's request log")

    def resolve(self) -> "ModelVersion":
        """The version the reference points at now (``NotFound`` says how to fix an unknown name or alias)."""
        return RegistryStore(self._store()).resolve(self.ref)

    def _window(self, version: "ModelVersion", now: float, start: float | None) -> tuple[float, float, float]:
        """``(start, end, until)``: the window to store and the exclusive upper bound to read with."""
        if self.last is None:
            assert self.width is not None
            return (now - self.width if start is None else min(float(start), now)), now, now
        span = PredictionLog(self._store()).span(version.name, version.version, last=self.last, until=now)
        if span is None:
            return now, now, now
        oldest, newest, _ = span
        return oldest, newest, float(np.nextafter(newest, math.inf))

    def _reference(self, version: "ModelVersion") -> "DriftReference | np.ndarray | str":
        key = (version.name, version.version)
        if key not in self._references:
            from .fromlog import version_reference

            try:
                self._references[key] = version_reference(RegistryStore(self._store()), version)
            except NotFound as exc:
                self._references[key] = str(exc)
        return self._references[key]

    def _calibration(self, version: "ModelVersion") -> "ConfidenceCalibration | str":
        key = (version.name, version.version)
        if key not in self._calibrations:
            try:
                self._calibrations[key] = calibrate_version(version.ref, tracking_uri=self.tracking_uri)
            except (LoopMLError, ValueError) as exc:  # not a classifier, no validation rows, no stored data
                self._calibrations[key] = f"no confidence calibration for {version.ref}: {exc}"
        return self._calibrations[key]

    def _balance(self, version: "ModelVersion") -> dict[str, float] | None:
        key = (version.name, version.version)
        if key not in self._balances:
            self._balances[key] = class_balance(version.profile)
        return self._balances[key]

    def _predictions(self, version: "ModelVersion", window: WindowSample, start: float, end: float) -> dict[str, Any]:
        # classes, confidence and their drift from the sampled answers; the sums exact over the whole window
        calibration = self._calibration(version)  # its validation confidences: the reference of the window's
        scores = None if isinstance(calibration, str) else calibration.confidences
        summary = summarize_answers(window.answers, reference=self._balance(version), min_rows=self.min_rows,
                                    scores=scores)
        row = {k: json_scalar(v) for k, v in summary.items()}
        rows = window.counts["rows"]
        row.update(requests=window.counts["requests"], rows=rows, abstained=window.abstained,
                   abstention_rate=window.abstained / rows if rows else None, abstained_exact=window.abstained_exact,
                   sampled=len(window.answers), of=window.counts["requests"], window_start=start, window_end=end)
        return row

    def _drift(self, version: "ModelVersion", window: WindowSample) -> tuple[bool | None, int, dict[str, Any]]:
        from .fromlog import version_drift

        x = stack_inputs([r["inputs"] for r in window.inputs]) if window.inputs else np.empty((0,))
        sampled = {"sampled": len(window.inputs), "of": window.counts["input_requests"]}
        if len(x) < self.min_rows:
            reason = f"{window.counts['input_rows']} logged input rows in the window, at least {self.min_rows} needed"
            missing = window.counts["requests"] - window.counts["input_requests"]
            if missing:
                reason += f" ({missing} requests kept no inputs: serve with --log-inputs 1.0)"
            return None, len(x), {"status": NOT_ENOUGH, "reason": reason, **sampled}
        reference = self._reference(version)
        if isinstance(reference, str):
            return None, len(x), {"status": NOT_ENOUGH, "reason": reference, **sampled}
        try:
            report = version_drift(RegistryStore(self._store()), version, x, reference, alpha=self.alpha,
                                   multivariate=self.multivariate, seed=self.seed)
        except ArgumentError as exc:  # the log's rows do not fit the reference: the version's data, not this window
            return None, len(x), {"status": "error", "reason": str(exc), **sampled}
        payload = report.to_dict()
        payload.pop("histograms", None)
        features = len(report.features)
        payload.update(status="ok", share_drifted=len(report.drifted_features) / features if features else 0.0, **sampled)
        return report.drifted, len(x), payload

    def _performance(self, version: "ModelVersion", window: WindowSample, start: float,
                     until: float) -> tuple[dict[str, Any], dict[str, str], int, int]:
        notes: dict[str, str] = {}
        ref = version.ref
        payload: dict[str, Any] = {"accuracy": None, "accuracy_low": None, "accuracy_high": None, "labelled": 0,
                                   "estimated_accuracy": None, "estimated_rows": 0,
                                   "sampled": len(window.answers), "of": window.counts["requests"]}
        answered = 0
        try:  # every labelled request of the window (labels are few): exact
            acc = live_accuracy(ref, since=start, until=until, tracking_uri=self.tracking_uri)
        except ArgumentError as exc:  # a regressor's answers: no accuracy yet
            notes["accuracy"] = str(exc)
        else:
            if len(acc):
                w = acc.iloc[0]
                answered = int(w["answered"])
                payload.update(accuracy=json_scalar(float(w["accuracy"])), accuracy_low=json_scalar(float(w["ci_low"])),
                               accuracy_high=json_scalar(float(w["ci_high"])), labelled=int(w["labelled"]))
            else:
                notes["accuracy"] = "no labelled request in the window"
        calibration = self._calibration(version)
        estimated_rows = 0
        if isinstance(calibration, str):
            notes["estimated_accuracy"] = calibration
        else:  # the label-free estimate: the sampled answers with probabilities
            probabilities = [item["probabilities"] for rec in window.answers for item in answer_rows(rec["outputs"])
                             if item.get("status", "ok") == "ok" and item.get("probabilities") is not None]
            widths = {len(p) for p in probabilities}
            if len(widths) > 1:
                notes["estimated_accuracy"] = f"the answers have probabilities of {sorted(widths)} classes"
            elif probabilities:
                estimated_rows = len(probabilities)
                payload.update(estimated_accuracy=json_scalar(estimated_accuracy(np.asarray(probabilities, dtype=np.float64),
                                                                            calibration)),
                               estimated_rows=estimated_rows)
            else:
                notes["estimated_accuracy"] = "no answer with class probabilities in the window"
        return payload, notes, answered, estimated_rows

    # -- one cycle --------------------------------------------------------------------

    def check(self, *, now: float | None = None, start: float | None = None) -> CheckResult:
        """One cycle over the newest window (ending ``now``, default the current time); see :func:`check`.

        ``start``: this time window starts there instead of ``window`` before its end.
        """
        from .alerts import evaluate

        began = time.perf_counter()
        clock = time.time() if now is None else float(now)
        now = clock - self.delay
        version = self.resolve()
        store = self._store()
        log = MonitorLog(store)
        start, end, until = self._window(version, now, start)
        name, number = version.name, version.version
        stored: dict[str, int] = {}
        notes: dict[str, str] = {}

        window = sample_window(PredictionLog(store), name, number, since=start, until=until,
                               max_requests=self.max_requests, seed=self.seed)
        row = self._predictions(version, window, start, end)
        stored["predictions"] = log.save_result(name, number, "predictions", window=(start, end), rows=int(row["rows"]),
                                                flagged=row["prediction_drifted"], payload=row)

        flagged, drift_rows, drift_payload = self._drift(version, window)
        stored["drift"] = log.save_result(name, number, "drift", window=(start, end), rows=drift_rows, flagged=flagged,
                                          payload=drift_payload)
        if drift_payload["status"] != "ok":
            notes["drift"] = drift_payload["reason"]

        perf, perf_notes, answered, estimated_rows = self._performance(version, window, start, until)
        perf["abstention_rate"] = row["abstention_rate"]
        notes.update(perf_notes)
        stored["performance"] = log.save_result(name, number, "performance", window=(start, end), rows=int(row["rows"]),
                                                flagged=None, payload={**perf, "notes": notes})

        values: dict[str, float | None] = {
            "drift": drift_payload.get("share_drifted"),
            "accuracy": perf["accuracy"] if answered >= self.min_rows else None,
            "estimated_accuracy": perf["estimated_accuracy"] if estimated_rows >= self.min_rows else None,
            "abstention_rate": row["abstention_rate"] if int(row["rows"]) >= self.min_rows else None,
        }
        few = f"fewer than {self.min_rows} rows in the window"
        if perf["accuracy"] is not None and values["accuracy"] is None:
            notes.setdefault("accuracy", f"{answered} answered labelled rows: {few}")
        if perf["estimated_accuracy"] is not None and values["estimated_accuracy"] is None:
            notes.setdefault("estimated_accuracy", f"{estimated_rows} answered rows: {few}")
        if row["abstention_rate"] is not None and values["abstention_rate"] is None:
            notes.setdefault("abstention_rate", f"{row['rows']} rows: {few}")
        fired = evaluate(name, number, {k: float(v) for k, v in values.items() if v is not None},
                         cooldown=self.cooldown, at=clock, tracking_uri=self.tracking_uri)
        return CheckResult(name, number, (start, end), int(row["requests"]), int(row["rows"]), values, stored, fired, notes,
                           time.perf_counter() - began)


def check(ref: str, *, window: float | str | None = "5m", last: int | None = None, min_rows: int = MIN_ROWS,
          multivariate: bool | None = None, alpha: float = 0.05, cooldown: float = 3600.0, delay: float = 0.0,
          now: float | None = None, max_requests: int = MAX_REQUESTS, seed: int = 0,
          tracking_uri: str | None = None) -> CheckResult:
    """One monitoring cycle of the version ``ref`` points at now, over the newest window of its request log.

    ``window``: a duration (``"5m"``, seconds) back from ``now``; ``last``: the newest
    ``last`` requests instead. ``min_rows``: the rows a metric needs to be measured for
    alerts (drift: logged input rows; accuracy: labelled answered rows). ``multivariate``
    and ``alpha``: as for :func:`loopml.monitor.drift`. ``cooldown``: as for
    :func:`loopml.monitor.alerts.evaluate`. ``delay``: the window ends that many seconds
    before ``now`` (default: the current time). Stores one result per kind (module
    docstring) and returns a :class:`CheckResult`.
    """
    return Watcher(ref, window=window, last=last, min_rows=min_rows, multivariate=multivariate, alpha=alpha,
                   cooldown=cooldown, delay=delay, max_requests=max_requests, seed=seed,
                   tracking_uri=tracking_uri).check(now=now)


def watch(
    ref: str,
    every: float | str = "5m",
    *,
    window: float | str | None = None,
    last: int | None = None,
    min_rows: int = MIN_ROWS,
    multivariate: bool | None = None,
    alpha: float = 0.05,
    cooldown: float = 3600.0,
    delay: float = DELAY,
    max_requests: int = MAX_REQUESTS,
    seed: int = 0,
    tracking_uri: str | None = None,
    stop: threading.Event | None = None,
    cycles: int | None = None,
    wait_first: bool = False,
    since: float | None = None,
    on_result: Callable[[CheckResult], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> WatchSummary:
    """:func:`check` every ``every`` (``"5m"``, seconds) until ``stop`` is set, ``cycles`` have run, or Ctrl-C.

    ``window`` defaults to ``every``: consecutive windows then tile the log, each request
    in one window (a window starts where the last stored one ended, so a cycle that
    failed or overran leaves no gap). Each window ends ``delay`` seconds (:data:`DELAY`) before its cycle
    starts, so that the server's request log, written in the background within a
    quarter of a second, holds every request of the window when it is read. The reference
    is checked before the first cycle (an unknown model or alias raises ``NotFound``);
    after that a failing cycle is logged (``logging.getLogger("loopml.monitor.watch")``),
    passed to ``on_error``, and the next cycle runs. ``on_result`` gets each cycle's
    :class:`CheckResult`. ``wait_first``: the first cycle after one interval (as
    ``loopml serve --monitor``, whose log starts empty) rather than at once; ``since``:
    the first time window starts there (epoch seconds; the server's start, so that the
    requests answered while the monitor started are in its first window).
    Cycles start on a fixed schedule; one that overruns skips the slots it missed.

    >>> stop = threading.Event()
    >>> summary = watch("digits@production", every="5m", stop=stop, cycles=1)
    >>> summary.cycles
    1
    """
    period = parse_duration(every, "every")
    if cycles is not None:
        _check_rows(cycles, "cycles")
    width = parse_duration(window, "window") if window is not None else period
    tile = last is None and width == period  # each window starts where the last stored one ended
    watcher = Watcher(ref, window=width, last=last, min_rows=min_rows,
                      multivariate=multivariate, alpha=alpha, cooldown=cooldown, delay=delay,
                      max_requests=max_requests, seed=seed, tracking_uri=tracking_uri)
    watcher.resolve()  # a name or alias that does not exist is the caller's mistake: say so now
    stop = stop if stop is not None else threading.Event()
    summary = WatchSummary()
    # slot k starts at start + k * period, on both clocks: the monotonic one to wait, the wall one to name the
    # window, so that windows as wide as the period tile the log exactly
    mono0, wall0 = time.monotonic(), time.time()
    slot = 1 if wait_first else 0
    start = since
    try:
        while not stop.wait(max(0.0, mono0 + slot * period - time.monotonic())):
            try:
                result = watcher.check(now=wall0 + slot * period, start=start)
            except Exception as exc:  # noqa: BLE001 - one failed cycle must not end the watch; it is logged
                summary.cycles += 1
                summary.failures += 1
                if isinstance(exc, LoopMLError):
                    _log.warning("monitor cycle of %s failed: %s", ref, exc)
                else:
                    _log.exception("monitor cycle of %s failed", ref)
                if on_error is not None:
                    on_error(exc)
            else:
                summary.cycles += 1
                summary.alerts += len(result.alerts)
                start = result.window[1] if tile else None
                if on_result is not None:
                    on_result(result)
            if cycles is not None and summary.cycles >= cycles:
                break
            slot = max(slot + 1, math.ceil((time.monotonic() - mono0) / period))  # an overrun skips the slots it missed
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary

