"""A served model's performance: measured from feedback labels, estimated without them, and watched for concept drift.

Three parts, each answering what the one before cannot:

- :func:`live_accuracy`: accuracy from the labels sent to ``POST /v1/feedback``,
  joined to the request log by request id (one SQL query,
  :meth:`~loopml.store.predictions.PredictionLog.labelled`), per window, with the
  count of labelled rows and a Wilson 95% interval. An abstention (the OOD gate
  said "I don't know") is not a wrong answer: ``coverage`` is answered / labelled
  and ``accuracy`` is on the answered rows;
- :func:`estimated_accuracy`: a label-free estimate (the mean probability of the
  predicted class after isotonic calibration, as NannyML's CBPE; or ATC), calibrated
  on the version's validation split with :class:`ConfidenceCalibration`. Right under covariate shift, wrong under concept
  drift (the model is then confidently wrong: nothing in the inputs says so);
- :func:`ddm`: the drift detection method (Gama et al. 2004) on the stream of
  feedback errors, which catches that concept drift as soon as labels arrive.

The request log of the current store, one labelled request, its accuracy:

>>> from loopml.monitor import ConfidenceCalibration, ddm, estimated_accuracy, live_accuracy
>>> from loopml.store.predictions import PredictionLog
>>> from loopml.tracking.api import backend_for
>>> log = PredictionLog(backend_for())
>>> log.insert_many([{"request_id": "r1", "model": "digits", "version": 1, "created_at": 0.0, "status": "ok",
...                   "rows": 1, "latency_ms": 0.4, "ood_score": None, "inputs": None,
...                   "outputs": '{"prediction": "3", "probabilities": [0.1, 0.9]}'}])
>>> log.add_feedback("r1", 3)["label"]
3
>>> w = live_accuracy("digits/1").iloc[0]
>>> int(w.labelled), float(w.accuracy), round(float(w.ci_low), 3)
(1, 1.0, 0.207)

Estimated without labels, and the drift detector on a stream of errors:

>>> _ = model.eval()
>>> probs = lambda x: torch.softmax(model(x), dim=1).detach().numpy()
>>> cal = ConfidenceCalibration.fit(probs(x_val), y_val.numpy())
>>> abs(estimated_accuracy(probs(x_test), cal) - float((probs(x_test).argmax(1) == y_test.numpy()).mean())) < 0.05
True
>>> rng = np.random.default_rng(0)
>>> ddm(np.r_[rng.random(2000) < 0.1, rng.random(2000) < 0.4]).drifts      # error rate 10%, then 40% from 2000
[2008]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import ArgumentError, ArgumentTypeError
from ..models.evaldata import version_data
from ..models.registry import load_version, registry_for, resolve_version
from ..store.labels import LabelStore, consensus
from ..store.predictions import PredictionLog
from ..store.registry import ModelVersion, RegistryStore
from ..store.tracking import TrackingStore
from ..tracking.api import database_for
from .windows import split_windows

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ConfidenceCalibration", "DDMResult", "calibrate_version", "ddm", "estimated_accuracy", "feedback_drift", "feedback_outcomes", "live_accuracy",
    "live_estimate",
]

OUTCOME_COLUMNS = ["request_id", "version", "created_at", "labelled_at", "row", "status", "prediction", "label", "answered", "correct"]
WINDOW_COLUMNS = ["start", "end", "labelled", "answered", "abstained", "coverage", "correct", "accuracy", "ci_low", "ci_high"]


def _log(store: "TrackingStore | PredictionLog | None", tracking_uri: str | None) -> PredictionLog:
    if isinstance(store, PredictionLog):
        return store
    if isinstance(store, TrackingStore):
        return PredictionLog(store)
    if store is not None:
        raise ArgumentTypeError(f"Argument store should be a TrackingStore or a PredictionLog; got {type(store).__name__}")
    return PredictionLog(database_for(tracking_uri, "Reading the request log (or pass store=TrackingStore(...))"))


def _model(model: str, version: int | None, log: PredictionLog) -> tuple[str, int | None]:
    if not isinstance(model, str) or not model:
        raise ArgumentTypeError(f"Argument model should be a model name or reference such as 'digits', 'digits/3' or "
                                f"'digits@production'; got {model!r}")
    if "@" in model:
        found = RegistryStore(log.store).resolve(model)
        if version is not None and version != found.version:
            raise ArgumentError(f"Argument model {model!r} is version {found.version}, but version={version} was given")
        return found.name, found.version
    name, _, number = model.partition("/")
    if not number:
        return name, version
    if not number.isdigit() or (version is not None and int(number) != version):
        raise ArgumentError(f"Argument model should be 'name', 'name/N' or 'name@alias' (and agree with version=); got {model!r}")
    return name, int(number)


def feedback_outcomes(
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    store: "TrackingStore | PredictionLog | None" = None,
    tracking_uri: str | None = None,
) -> "pd.DataFrame":
    """One row per labelled input row of a classifier's requests, oldest first: was it answered, was it right.

    A request of one row is labelled with one value, a batch with a list (one label
    per row) or row by row (``row=``; where a row has row-level labels they count, not the
    request's). Each annotator's newest answer counts, and a row counts only when they
    agree (:func:`~loopml.store.labels.consensus`): a disputed or skipped row, or one
    labelled "none of these classes", is left out. ``prediction`` is the class name the
    server sent, ``label`` the agreed label, compared as text (``3`` and ``"3"`` are the same class).
    ``answered`` is False for a row the OOD gate abstained on, and ``correct`` is then
    False too (use it only where ``answered``). Columns: :data:`OUTCOME_COLUMNS`.
    A model whose answers have no class (a regressor) raises ``ArgumentError``.

    >>> feedback_outcomes("iris").empty
    True
    """
    import pandas as pd

    log = _log(store, tracking_uri)
    name, number = _model(model, version, log)
    rows: list[tuple[Any, ...]] = []
    outputs: tuple[str, list[Any]] | None = None
    for rec in LabelStore(log.store).labelled_rows(name, number, since=since, until=until):
        status, label = consensus(rec["votes"])
        if status != "labelled" or label == "none":  # disputed, skipped, "none of these classes": no truth to score
            continue
        if outputs is None or outputs[0] != rec["request_id"]:
            out = orjson.loads(rec["outputs"])
            outputs = (rec["request_id"], out["results"] if "results" in out else [out])
        item = outputs[1][rec["row"]]
        pred = item.get("prediction")
        answered = item.get("status", "ok") == "ok"
        if answered and (isinstance(pred, (list, dict)) or "probabilities" not in item):
            raise ArgumentError(f"Accuracy needs a classifier's answers; request {rec['request_id']!r} of {name!r} "
                                f"answered {pred!r} with no class probabilities")
        correct = answered and str(pred) == str(label)
        rows.append((rec["request_id"], rec["version"], rec["created_at"], rec["labelled_at"], rec["row"],
                     item.get("status", "ok"), pred, label, answered, correct))
    return pd.DataFrame(rows, columns=OUTCOME_COLUMNS).astype({"answered": bool, "correct": bool})


def _window(start: float, end: float, outcomes: "pd.DataFrame", confidence: float) -> list[Any]:
    try:
        from scipy.stats import binomtest
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("Accuracy intervals need SciPy (with scikit-learn): pip install 'loopml[data]'") from exc

    labelled = len(outcomes)
    answered = int(outcomes["answered"].sum())
    correct = int(outcomes["correct"].sum())
    low = high = accuracy = math.nan
    if answered:
        accuracy = correct / answered
        ci = binomtest(correct, answered).proportion_ci(confidence_level=confidence, method="wilson")
        low, high = float(ci.low), float(ci.high)
    coverage = answered / labelled if labelled else math.nan
    return [start, end, labelled, answered, labelled - answered, coverage, correct, accuracy, low, high]




def live_accuracy(
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    per: str | float | int | None = None,
    confidence: float = 0.95,
    store: "TrackingStore | PredictionLog | None" = None,
    tracking_uri: str | None = None,
) -> "pd.DataFrame":
    """Accuracy of a served classifier from its feedback labels, per window, with a Wilson interval.

    ``model`` is a name (``"digits"``: every version) or a version (``"digits/3"``,
    ``"digits@production"``, or ``version=3``);
    ``since`` / ``until`` bound the requests' time (seconds since the epoch).
    ``per`` makes the windows: ``None`` one window over everything, an ``int`` that
    many labelled rows per window (the last may be short), a duration (``"1h"``,
    ``"30m"``, or seconds as a float) windows of that length aligned on ``since`` (else
    on the first labelled request); time windows without a label are left out.

    Columns (:data:`WINDOW_COLUMNS`): ``start``, ``end`` (request times; a time window's
    bounds, a count window's first and last request), ``labelled`` rows, ``answered``,
    ``abstained``, ``coverage`` = answered / labelled, ``correct``, ``accuracy`` =
    correct / answered (an abstention is not a wrong answer), and ``ci_low`` /
    ``ci_high``: the Wilson score interval at ``confidence``
    (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``), NaN with no answered row.

    >>> list(live_accuracy("iris", per="1h").columns)     # no labelled request of iris: no window
    ['start', 'end', 'labelled', 'answered', 'abstained', 'coverage', 'correct', 'accuracy', 'ci_low', 'ci_high']
    """
    import pandas as pd

    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ArgumentError(f"Argument confidence should be a fraction between 0 and 1 such as 0.95; got {confidence!r}")
    windows = split_windows(per, since, until)
    outcomes = feedback_outcomes(model, version=version, since=since, until=until, store=store, tracking_uri=tracking_uri)
    frames = [_window(start, end, outcomes.iloc[rows], confidence)
              for start, end, rows in windows(outcomes["created_at"].to_numpy(dtype=np.float64))]
    return pd.DataFrame(frames, columns=WINDOW_COLUMNS)


def _check_probabilities(probabilities: Any, name: str) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or not len(p) or not np.isfinite(p).all() or (p < 0).any():
        raise ArgumentError(f"Argument {name} should be a 2-d array of class probabilities (rows x classes, at least 2), "
                            f"finite and non-negative (softmax outputs, not logits); got shape {p.shape}")
    # 1e-3: a float32 softmax sums to 1 within ~1e-6 per class; logits or scores are off by far more
    off = np.flatnonzero(np.abs(p.sum(axis=1) - 1.0) > 1e-3)
    if len(off):
        row = int(off[0])
        raise ArgumentError(f"Argument {name} should hold class probabilities that sum to 1 on each row (softmax "
                            f"outputs, not logits or scores); row {row} sums to {p[row].sum():.6g}")
    return p


METHODS = ("isotonic", "atc")
CALIBRATION_FORMAT = 2  # to_dict's "format"; format 1 is the threshold alone ({"threshold", "val_accuracy", "rows"})


def _isotonic_curve(x: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The isotonic (non-decreasing) regression of ``y`` on ``x`` as knots to interpolate between.

    As scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` (CBPE's calibrator, the tests'
    oracle): values of ``x`` closer than float64's resolution (1e-15) to the first of their group are
    pooled into one knot at that first value, with the mean ``y`` weighted by the count; the fit is
    read by linear interpolation between the knots, clipped at both ends.
    ``scipy.optimize.isotonic_regression`` pools the adjacent violators; only the knots that bound a
    flat run are kept. scikit-learn's class is not used itself: its knots are private
    (``X_thresholds_``) and ``data`` is an extra the monitor does not need.
    """
    from scipy.optimize import isotonic_regression

    ux, inverse = np.unique(x, return_inverse=True)
    counts = np.bincount(inverse).astype(np.float64)
    sums = np.bincount(inverse, weights=y.astype(np.float64))
    eps = np.finfo(np.float64).resolution
    first = np.r_[True, np.diff(ux) >= eps]
    # a chain of near-ties spanning more than eps splits where scikit-learn's _make_unique splits it (a new
    # group at the first value >= eps above the group's first): rare, so a loop over those chains only
    begins = np.flatnonzero(first)
    ends = np.r_[begins[1:], len(ux)] - 1
    long = ux[ends] - ux[begins] >= eps
    for b, e in zip(begins[long], ends[long]):
        anchor = ux[b]
        for j in range(b + 1, e + 1):
            if ux[j] - anchor >= eps:
                first[j], anchor = True, ux[j]
    group = np.cumsum(first) - 1
    knots = ux[first]
    weights = np.bincount(group, weights=counts)
    fitted = isotonic_regression(np.bincount(group, weights=sums) / weights, weights=weights).x
    # a knot inside a flat run changes nothing in the interpolation: keep the ends of each run
    keep = np.ones(len(knots), dtype=bool)
    if len(knots) > 2:
        keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return tuple(knots[keep].tolist()), tuple(fitted[keep].tolist())


@dataclass(frozen=True)
class ConfidenceCalibration:
    """A classifier's confidence calibrated on its validation split, to estimate its accuracy without labels.

    Two estimators, picked by ``method`` (:func:`ConfidenceCalibration.fit` fits both):

    - ``"isotonic"`` (the default of :meth:`fit`), NannyML's CBPE for accuracy: each
      class's probability is calibrated one-vs-rest by isotonic regression on the
      validation rows (``curves``: one per class, knots to interpolate between), the
      calibrated probabilities of a row are renormalised to sum to 1, and the expected
      accuracy is the mean calibrated probability of the predicted class (the argmax
      of the probabilities served). For two classes this is CBPE's binary
      calibration of the positive score (isotonic regression is symmetric under
      ``p -> 1 - p``);
    - ``"atc"``, average thresholded confidence (Garg et al. 2022): ``threshold`` is
      chosen so that the share of validation rows whose top-class probability is
      above it equals the validation accuracy; the estimate is the share of rows
      above it.

    Why isotonic by default, measured (docs/monitoring.md, docs/benchmarks.md): on
    the shared generator's perfectly calibrated score under covariate shift its
    error is CBPE's (0.0030, seeds 0-4) where ATC's is 0.0111, since ATC miscounts
    rows the shift moves across its threshold; on the 3-class test problem of
    ``tests/monitor/test_performance.py`` under 50 shifts (5 seeds x 10 features) it
    errs 0.0088 on average against ATC's 0.0100. Neither estimator sees concept
    drift (the model is then confidently wrong): that is :func:`ddm`'s job, on labels.

    ``threshold``, ``val_accuracy``, ``rows`` (validation rows) are kept to report
    with the estimate. Built from those three alone (as before isotonic was added),
    the calibration is ATC. :meth:`to_dict` / :meth:`from_dict` store it as JSON.

    >>> cal = ConfidenceCalibration.fit(np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]]), np.array([0, 1, 1, 0]))
    >>> cal
    ConfidenceCalibration(threshold=0.6, val_accuracy=0.5, rows=4, method='isotonic')
    >>> cal.curves[1]        # P(class 1) by the class-1 probability: the knots of the isotonic fit
    ((0.1, 0.4, 0.55, 0.7), (0.0, 0.5, 0.5, 1.0))
    """

    threshold: float
    val_accuracy: float
    rows: int
    method: str = "atc"
    curves: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = field(default=(), repr=False)
    confidences: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The validation rows' top-class probabilities, sorted (from :meth:`fit`; not stored by :meth:`to_dict`):
    the reference the scheduled monitor tests each window's confidences against."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ArgumentError(f"Argument method should be one of {', '.join(map(repr, METHODS))}; got {self.method!r}")
        if self.method == "isotonic" and not self.curves:
            raise ArgumentError("A calibration with method='isotonic' needs its curves: fit it with "
                                "ConfidenceCalibration.fit(val_probabilities, val_labels)")

    @property
    def classes(self) -> int | None:
        """The number of classes the isotonic curves were fitted for (None for a threshold alone)."""
        return len(self.curves) if self.curves else None

    @classmethod
    def fit(cls, probabilities: Any, labels: Any, *, method: str = "isotonic") -> "ConfidenceCalibration":
        """Both estimators from validation probabilities (rows x classes) and labels (class indices); ``method`` picks the one used."""
        if method not in METHODS:
            raise ArgumentError(f"Argument method should be one of {', '.join(map(repr, METHODS))}; got {method!r}")
        p = _check_probabilities(probabilities, "probabilities")
        y = np.asarray(labels)
        if y.shape != (len(p),) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= p.shape[1]).any():
            raise ArgumentError(f"Argument labels should be {len(p)} class indices in [0, {p.shape[1]}); "
                                f"got shape {y.shape}, dtype {y.dtype}")
        accuracy = float((p.argmax(axis=1) == y).mean())
        confidence = np.sort(p.max(axis=1))
        wrong = int(round((1.0 - accuracy) * len(p)))  # that many rows at or below the threshold
        threshold = float(confidence[wrong - 1]) if wrong else float(np.nextafter(confidence[0], -np.inf))
        curves = tuple(_isotonic_curve(p[:, k], y == k) for k in range(p.shape[1]))
        return cls(threshold, accuracy, len(p), method, curves, confidence)

    def with_method(self, method: str) -> "ConfidenceCalibration":
        """The same calibration estimating with the other ``method`` (``"isotonic"`` needs the curves :meth:`fit` made)."""
        return replace(self, method=method)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``format`` 2), read back by :meth:`from_dict`."""
        return {"format": CALIBRATION_FORMAT, "method": self.method, "threshold": self.threshold,
                "val_accuracy": self.val_accuracy, "rows": self.rows, "curves": [[list(x), list(v)] for x, v in self.curves]}

    @classmethod
    def from_dict(cls, doc: Any) -> "ConfidenceCalibration":
        """A calibration from :meth:`to_dict`'s dict, or from the threshold alone (``threshold``, ``val_accuracy``, ``rows``: ATC).

        >>> ConfidenceCalibration.from_dict({"threshold": 0.6, "val_accuracy": 0.5, "rows": 4})
        ConfidenceCalibration(threshold=0.6, val_accuracy=0.5, rows=4, method='atc')
        """
        if not isinstance(doc, dict):
            raise ArgumentTypeError(f"Argument doc should be a dict from ConfidenceCalibration.to_dict(); got {type(doc).__name__}")
        version = doc.get("format", 1)
        if version not in (1, CALIBRATION_FORMAT):
            raise ArgumentError(f"This calibration has format {version!r}; this loopml reads formats 1 and {CALIBRATION_FORMAT}: "
                                f"upgrade loopml, or fit it again with calibrate_version")
        expected = {"threshold", "val_accuracy", "rows"} | ({"format", "method", "curves"} if version == 2 else set())
        if set(doc) != expected:
            raise ArgumentError(f"A stored calibration of format {version} should have the keys {sorted(expected)}; got {sorted(doc)}")
        try:
            curves = tuple((tuple(float(v) for v in x), tuple(float(v) for v in f)) for x, f in doc.get("curves", ()))
            threshold, accuracy, rows = float(doc["threshold"]), float(doc["val_accuracy"]), int(doc["rows"])
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"A stored calibration should hold numbers and curves of [knots, values]: {exc}") from exc
        if any(len(x) != len(f) or not len(x) or list(x) != sorted(x) for x, f in curves):
            raise ArgumentError("A stored calibration's curves should be [knots, values] pairs of equal length with sorted knots")
        return cls(threshold, accuracy, rows, doc.get("method", "atc"), curves)


def calibrate_version(
    ref: str | ModelVersion,
    *,
    data: Any = None,
    target: str | None = None,
    seed: int = 0,
    format: str | None = None,
    method: str = "isotonic",
    tracking_uri: str | None = None,
) -> ConfidenceCalibration:
    """A registered classifier's :class:`ConfidenceCalibration`, fitted on its validation split.

    The version is loaded as ``loopml.load_model`` loads it (``format``), and its
    softmax probabilities (what the server sends) are taken on the validation part of
    ``data`` (a Dataset, Split, ``(x, y)``, a file with ``target``, a stored
    fingerprint or a bundled set, split with ``seed``) or, without ``data``, of the
    datasets logged with the version's run; as ``fit_ood`` finds them. ``method``:
    the estimator it will use, ``"isotonic"`` (CBPE's) or ``"atc"``.

    >>> cal = calibrate_version("digits/1")        # the validation rows logged with digits/1's run
    >>> 0.5 < cal.val_accuracy <= 1.0, cal.rows == len(y_val)
    (True, True)
    """
    if method not in METHODS:
        raise ArgumentError(f"Argument method should be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    registry = registry_for(tracking_uri)
    version = resolve_version(registry, ref)
    example = f"e.g. calibrate_version({version.ref!r}, data=(x, y))"
    parts = version_data(registry, version, data, target=target, seed=seed, example=example)
    if parts.val is None or not len(parts.val):
        raise ArgumentError(f"The data of {version.ref} has no validation rows to calibrate on: give data= with more rows, {example}")
    loaded = load_version(registry, version, format=format)
    if not loaded.signature.is_classifier:
        raise ArgumentError(f"{version.ref} is not a classifier: a confidence calibration needs class probabilities")
    return ConfidenceCalibration.fit(loaded.predict_proba(parts.val.x), np.asarray(parts.val.y, dtype=np.int64), method=method)


def estimated_accuracy(probabilities: Any, calibration: ConfidenceCalibration | None = None, *, method: str | None = None) -> float:
    """The accuracy a classifier should have on these rows, without labels.

    With ``calibration`` (the version's :class:`ConfidenceCalibration`, fitted on its
    validation split), by its ``method`` (or ``method=`` here): ``"isotonic"``, the mean
    of the calibrated probability of the predicted class (CBPE); ``"atc"``, the share of
    rows whose top-class probability is above its threshold. Without: the plain mean
    top-class probability, which errs by the model's miscalibration. Right under
    covariate shift, blind to concept drift: both measured in
    ``tests/monitor/test_performance.py`` and docs/monitoring.md.

    >>> p = np.array([[0.8, 0.2], [0.5, 0.5]])
    >>> cal = ConfidenceCalibration.fit(np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]]), np.array([0, 1, 1, 0]))
    >>> round(estimated_accuracy(p, cal), 4), estimated_accuracy(p, cal, method="atc"), estimated_accuracy(p)
    (0.6667, 0.5, 0.65)
    """
    p = _check_probabilities(probabilities, "probabilities")
    if calibration is None:
        if method is not None:
            raise ArgumentError(f"Argument method={method!r} needs a calibration: estimated_accuracy(p, calibrate_version(ref))")
        return float(p.max(axis=1).mean())
    if not isinstance(calibration, ConfidenceCalibration):
        raise ArgumentTypeError(f"Argument calibration should be a ConfidenceCalibration or None; got {type(calibration).__name__}")
    if method is not None and method != calibration.method:
        calibration = calibration.with_method(method)
    if calibration.method == "atc":
        return float((p.max(axis=1) > calibration.threshold).mean())
    if p.shape[1] != calibration.classes:
        raise ArgumentError(f"Argument probabilities has {p.shape[1]} classes, the calibration {calibration.classes}: "
                            f"calibrate the version these answers came from")
    calibrated = np.column_stack([np.interp(p[:, k], *curve) for k, curve in enumerate(calibration.curves)])
    total = calibrated.sum(axis=1)
    predicted = calibrated[np.arange(len(p)), p.argmax(axis=1)]
    # renormalised to sum to 1, as CBPE does; a row every curve maps to 0 counts as uniform (CBPE's choice too)
    share = np.divide(predicted, total, out=np.full(len(p), 1.0 / p.shape[1]), where=total > 0)
    return float(share.mean())


@dataclass(frozen=True)
class DDMResult:
    """Where :func:`ddm` warned and detected drift (positions in the stream, 0-based), one of each per detection."""

    warnings: list[int]
    drifts: list[int]

    @property
    def drifted(self) -> bool:
        return bool(self.drifts)


def ddm(errors: Sequence[bool] | np.ndarray, *, warning: float = 2.0, drift: float = 3.0, min_samples: int = 300) -> DDMResult:
    """The drift detection method (Gama et al. 2004) on a stream of errors (1 = the model was wrong).

    At each position ``i`` the error rate so far is ``p`` with ``s = sqrt(p (1 - p) / i)``;
    ``p_min`` and ``s_min`` are taken where ``p + s`` was smallest (from ``min_samples``
    on). A warning is raised at ``p + s >= p_min + warning * s_min`` and a drift at
    ``p + s >= p_min + drift * s_min``; after a drift the statistics start again from
    the next position. One deviation from the paper: a minimum with ``s = 0`` (no error
    seen yet) is not taken, as it would make the first error a drift.

    Written in NumPy rather than taken from ``river``: it is a few vectorised lines
    (cumulative sums and a running minimum per segment), and keeps a dependency out.

    >>> ddm([0] * 400 + [1] * 50)      # no error in 400 labels, then only errors
    DDMResult(warnings=[401], drifts=[402])
    """
    e = np.asarray(errors)
    if e.ndim != 1 or not (e.dtype == bool or np.isin(e, (0, 1)).all()):
        raise ArgumentError(f"Argument errors should be a 1-d sequence of 0/1 or booleans (1 = wrong); got shape {e.shape}")
    if not 0 < warning <= drift:
        raise ArgumentError(f"Arguments warning and drift should satisfy 0 < warning <= drift; got {warning}, {drift}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise ArgumentError(f"Argument min_samples should be a whole number of at least 1; got {min_samples!r}")
    e = e.astype(np.float64)
    warnings: list[int] = []
    drifts: list[int] = []
    start = 0
    while len(e) - start >= min_samples:
        seg = e[start:]
        n = np.arange(1, len(seg) + 1, dtype=np.float64)
        p = np.cumsum(seg) / n
        s = np.sqrt(p * (1 - p) / n)
        ps = np.where((n >= min_samples) & (s > 0), p + s, np.inf)
        earlier = np.concatenate(([np.inf], np.minimum.accumulate(ps)[:-1]))
        at = np.maximum.accumulate(np.where(ps < earlier, np.arange(len(seg)), -1))  # where the running minimum was set
        ok = at >= 0
        p_min = np.where(ok, p[np.maximum(at, 0)], np.nan)
        s_min = np.where(ok, s[np.maximum(at, 0)], np.nan)
        live = ok & (n >= min_samples)
        with np.errstate(invalid="ignore"):
            fired = np.flatnonzero(live & (p + s >= p_min + drift * s_min))
            warned = np.flatnonzero(live & (p + s >= p_min + warning * s_min))
        if not len(fired):
            if len(warned):
                warnings.append(start + int(warned[0]))
            break
        first = int(fired[0])
        w = warned[warned <= first]
        warnings.append(start + int(w[0] if len(w) else first))
        drifts.append(start + first)
        start += first + 1
    return DDMResult(warnings, drifts)


def feedback_drift(
    model: str,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    warning: float = 2.0,
    drift: float = 3.0,
    min_samples: int = 300,
    store: TrackingStore | PredictionLog | None = None,
    tracking_uri: str | None = None,
) -> "pd.DataFrame":
    """:func:`ddm` on a served model's feedback: the errors of its answered, labelled rows in request order.

    One row per warning and drift: ``kind`` (``"warning"`` or ``"drift"``), ``position``
    (in the stream of answered labelled rows), and the ``request_id`` and
    ``created_at`` of the request where it fired. Abstained rows are left out of the
    stream (an abstention is not an error). Arguments as :func:`live_accuracy` and :func:`ddm`.

    >>> feedback_drift("iris").empty      # no labels, no alarm
    True
    """
    import pandas as pd

    rows = feedback_outcomes(model, version=version, since=since, until=until, store=store, tracking_uri=tracking_uri)
    answered = rows[rows["answered"]].reset_index(drop=True)
    found = ddm(~answered["correct"].to_numpy(dtype=bool), warning=warning, drift=drift, min_samples=min_samples)
    # a warning at the same row as its drift comes first
    events = sorted([(i, 0, "warning") for i in found.warnings] + [(i, 1, "drift") for i in found.drifts])
    return pd.DataFrame(
        [(kind, i, answered["request_id"].iloc[i], float(answered["created_at"].iloc[i])) for i, _, kind in events],
        columns=["kind", "position", "request_id", "created_at"],
    )


def live_estimate(
    model: str,
    calibration: ConfidenceCalibration | None = None,
    *,
    version: int | None = None,
    since: float | None = None,
    until: float | None = None,
    per: str | float | None = None,
    store: TrackingStore | PredictionLog | None = None,
    tracking_uri: str | None = None,
) -> "pd.DataFrame":
    """:func:`estimated_accuracy` per window of the request log, from the probabilities the server sent: no labels.

    Every answered row with class probabilities counts, labelled or not (abstained
    rows are left out, as in :func:`live_accuracy`). Windows as in
    :func:`live_accuracy`, counted in answered rows. Columns: ``start``, ``end``,
    ``rows``, ``estimated_accuracy``. Give the version's ``calibration``: without it
    the estimate is the mean confidence, which errs by the model's miscalibration.

    >>> list(live_estimate("iris", per="1h").columns)
    ['start', 'end', 'rows', 'estimated_accuracy']
    """
    import pandas as pd

    windows = split_windows(per, since, until)
    log = _log(store, tracking_uri)
    name, number = _model(model, version, log)
    times: list[float] = []
    probabilities: list[list[float]] = []
    for rec in log.answers(name, number, since=since, until=until):
        out = orjson.loads(rec["outputs"])
        for item in out["results"] if "results" in out else [out]:
            if item.get("status", "ok") == "ok" and item.get("probabilities") is not None:
                times.append(rec["created_at"])
                probabilities.append(item["probabilities"])
    widths = {len(p) for p in probabilities}
    if len(widths) > 1:
        raise ArgumentError(f"The answers of {model!r} have probabilities of {sorted(widths)} classes: pick one version "
                            f"(version= or 'name/N')")
    p = np.asarray(probabilities, dtype=np.float64)
    frames = [(start, end, len(rows), estimated_accuracy(p[rows], calibration))
              for start, end, rows in windows(np.asarray(times, dtype=np.float64))]
    return pd.DataFrame(frames, columns=["start", "end", "rows", "estimated_accuracy"])
