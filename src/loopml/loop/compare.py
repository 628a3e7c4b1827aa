"""Champion against challenger on the same examples: a paired test, a decision and why.

Two sets, each scored by both models row by row:

- the champion's stored **test split** (from its lineage, or ``test=``): the challenger
  must **not be worse**. Exact McNemar test, one-sided: of the ``n`` rows where the two
  disagree, ``b`` are right only for the champion; under "equally good" ``b`` is
  Binomial(n, 1/2), and the challenger is refused when ``P(B >= b) < alpha``
  (``scipy.stats.binomtest(b, n, 0.5, alternative="greater")``).
- **recent** audit-labeled data (``recent=``, default: the labels its retrain held out,
  from the challenger's lineage): the challenger must be **better**: ``c`` rows right only
  for it, ``P(C >= c) < alpha`` (the same exact test the other way), *and* an accuracy
  gain of at least ``min_gain``.

The defaults, ``alpha=0.01`` and ``min_gain=0.02``, keep a challenger that is not better
from being promoted: a one-sided exact test at 0.01 promotes an equally good model in at
most 1% of comparisons (the exact test is conservative), and the gain floor refuses a
significant but negligible gain on a large recent set. ``benchmarks/loop_promotions.py``
measures it: 0 promotions in 20 trials each of a model retrained on no new information
and of a deliberately worse one (docs/benchmarks.md).

The :class:`Comparison` (figures with Wilson 95% intervals, discordant counts, p-values,
the decision and its reasons) is stored with the challenger (its measurement
``comparison``) and read back by :func:`comparison_of`::

    c = compare("digits@production", "digits/4")
    c.decision, c.reasons              # 'promote', ['test: not worse ...', 'recent: better ...']
    comparison_of("digits/4").decision
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ArgumentError, Conflict, DataError, LoopMLError, NotFound
from ..models.registry import (
    current_user,
    load_version,
    registry_for,
    resolve_version,
)
from ..store.loopevents import LoopEvents
from ..store.registry import ModelVersion, local_registry

if TYPE_CHECKING:
    from ..data.dataset import Dataset
    from ..models.registry import LoadedModel
    from ..store.registry import RegistryStore

__all__ = [
    "ALPHA", "MIN_GAIN", "Comparison", "PairedResult", "check_signatures", "compare", "comparison_of", "mcnemar",
    "scoring_model",
]

ALPHA = 0.01
MIN_GAIN = 0.02
MEASUREMENT = "comparison"  # the key of the challenger's measurements that holds the stored Comparison


@dataclass(frozen=True, kw_only=True)
class PairedResult:
    """Both models on one set of rows: accuracies (Wilson 95% intervals), discordant counts, the one-sided p-value."""

    set: str  # "test" | "recent"
    fingerprint: str | None
    rows: int
    champion_accuracy: float
    champion_interval: tuple[float, float]
    challenger_accuracy: float
    challenger_interval: tuple[float, float]
    champion_only: int  # b: rows right only for the champion
    challenger_only: int  # c: rows right only for the challenger
    alternative: str  # "worse" (test: is the challenger worse?) | "better" (recent: is it better?)
    p_value: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["champion_interval"], d["challenger_interval"] = list(self.champion_interval), list(self.challenger_interval)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PairedResult":
        data = dict(d)
        data["champion_interval"] = tuple(data["champion_interval"])
        data["challenger_interval"] = tuple(data["challenger_interval"])
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The result of :func:`compare`: both sets' figures, the levels, the decision (``promote`` / ``keep``) and why."""

    champion: str
    challenger: str
    alpha: float
    min_gain: float
    test: PairedResult | None
    recent: PairedResult | None
    decision: str
    reasons: list[str] = field(default_factory=list)
    at: float = 0.0

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def to_dict(self) -> dict[str, Any]:
        return {"champion": self.champion, "challenger": self.challenger, "alpha": self.alpha, "min_gain": self.min_gain,
                "test": None if self.test is None else self.test.to_dict(),
                "recent": None if self.recent is None else self.recent.to_dict(),
                "decision": self.decision, "reasons": list(self.reasons), "at": self.at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Comparison":
        return cls(champion=d["champion"], challenger=d["challenger"], alpha=float(d["alpha"]),
                   min_gain=float(d["min_gain"]),
                   test=None if d.get("test") is None else PairedResult.from_dict(d["test"]),
                   recent=None if d.get("recent") is None else PairedResult.from_dict(d["recent"]),
                   decision=d["decision"], reasons=list(d.get("reasons") or []), at=float(d.get("at") or 0.0))


def mcnemar(champion_right: Any, challenger_right: Any, *, alternative: str) -> tuple[int, int, float]:
    """``(b, c, p)``: the exact one-sided McNemar test on paired outcomes (booleans per row).

    ``b``: rows right only for the champion, ``c``: only for the challenger. ``alternative="worse"``:
    p of at least ``b`` such rows of ``b + c`` if both were equally good; ``"better"``: the same of ``c``.
    p is 1.0 when they never disagree.

    >>> mcnemar([1, 1, 0, 0], [1, 0, 1, 1], alternative="better")
    (1, 2, 0.5)
    """
    from scipy.stats import binomtest

    a = np.asarray(champion_right, dtype=bool)
    z = np.asarray(challenger_right, dtype=bool)
    if a.shape != z.shape or a.ndim != 1:
        raise ArgumentError(f"Arguments champion_right and challenger_right should be 1-D and as long; got {a.shape} and {z.shape}")
    if alternative not in ("worse", "better"):
        raise ArgumentError(f"Argument alternative should be 'worse' or 'better'; got {alternative!r}")
    b, c = int(np.sum(a & ~z)), int(np.sum(~a & z))
    if b + c == 0:
        return b, c, 1.0
    k = b if alternative == "worse" else c
    return b, c, float(binomtest(k, b + c, 0.5, alternative="greater").pvalue)


def _wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def scoring_model(registry: "RegistryStore", version: ModelVersion) -> "LoadedModel":
    """The version loaded to score rows with: its state dict when its class imports here, else its first format."""
    # the state dict loads in milliseconds; a pt2 program takes seconds
    fmt = "torch" if "torch" in version.files and version.model_spec else None
    try:
        return load_version(registry, version, format=fmt)
    except LoopMLError:
        if fmt is None:
            raise
        return load_version(registry, version)


def check_signatures(champion: ModelVersion, challenger: ModelVersion) -> None:
    """Raise :class:`~loopml.errors.Conflict` unless both take the same inputs and answer the same classes."""
    a, b = champion.signature or {}, challenger.signature or {}
    for key in ("inputs", "class_names"):
        if a.get(key) != b.get(key):
            raise Conflict(
                f"Cannot compare {challenger.ref} with {champion.ref}: their signatures differ in {key} "
                f"({b.get(key)!r} against {a.get(key)!r}). A challenger must take the same inputs and answer the same "
                "classes; register it as a model of its own name instead"
            )


def _paired(which: str, ds: "Dataset", champ: "LoadedModel", chall: "LoadedModel", alpha: float,
            min_gain: float) -> PairedResult:
    y = ds.y.numpy()
    x = ds.x.numpy()
    right_a = champ.predict(x) == y
    right_z = chall.predict(x) == y
    alternative = "worse" if which == "test" else "better"
    b, c, p = mcnemar(right_a, right_z, alternative=alternative)
    n = len(y)
    acc_a, acc_z = float(right_a.mean()) if n else 0.0, float(right_z.mean()) if n else 0.0
    if which == "test":
        passed = p >= alpha
    else:
        passed = p < alpha and acc_z - acc_a >= min_gain
    return PairedResult(set=which, fingerprint=ds.fingerprint, rows=n,
                        champion_accuracy=acc_a, champion_interval=_wilson(int(right_a.sum()), n),
                        challenger_accuracy=acc_z, challenger_interval=_wilson(int(right_z.sum()), n),
                        champion_only=b, challenger_only=c, alternative=alternative, p_value=p, passed=passed)


def _lineage_set(registry: "RegistryStore", version: ModelVersion, role: str) -> "Dataset | None":
    from ..data.sources import stored

    fp = ((version.lineage or {}).get("datasets") or {}).get(role)
    if not fp:
        return None
    try:
        return stored(registry.store, fp, run_ids=[version.run_id] if version.run_id else None)
    except (DataError, NotFound):
        return None


def _as_dataset(registry: "RegistryStore", data: Any, what: str) -> "Dataset":
    from ..data.dataset import Dataset
    from ..data.sources import resolve
    from ..data.split import Split

    got = resolve(data, backend=registry.store)
    if isinstance(got, Split):
        got = got.test if what == "test" and got.test is not None else got.train
    if not isinstance(got, Dataset):
        raise ArgumentError(f"Argument {what} should be labeled rows (a Dataset, (x, y), a .npz file or a fingerprint)")
    return got


def _reasons(test: PairedResult | None, recent: PairedResult | None, alpha: float, min_gain: float) -> list[str]:
    out: list[str] = []
    if test is None:
        out.append("test: no test split (none stored with the champion's run and none given): cannot show it is not worse")
    elif test.passed:
        out.append(f"test: not worse ({test.champion_only} rows right only for the champion, {test.challenger_only} only "
                   f"for the challenger; one-sided McNemar p={test.p_value:.3g} >= {alpha})")
    else:
        out.append(f"test: worse ({test.champion_only} rows right only for the champion against {test.challenger_only}; "
                   f"one-sided McNemar p={test.p_value:.3g} < {alpha})")
    if recent is None:
        out.append("recent: no audit-labeled recent data (pass recent=, or retrain with held-out labels): "
                   "cannot show it is better")
    else:
        gain = recent.challenger_accuracy - recent.champion_accuracy
        if recent.passed:
            out.append(f"recent: better (accuracy {recent.champion_accuracy:.3f} -> {recent.challenger_accuracy:.3f}, "
                       f"gain {gain:+.3f} >= {min_gain}; one-sided McNemar p={recent.p_value:.3g} < {alpha})")
        elif recent.p_value >= alpha:
            out.append(f"recent: not shown better ({recent.challenger_only} rows right only for the challenger against "
                       f"{recent.champion_only}; one-sided McNemar p={recent.p_value:.3g} >= {alpha} on {recent.rows} rows)")
        else:
            out.append(f"recent: gain {gain:+.3f} below the minimum {min_gain} (p={recent.p_value:.3g})")
    return out


def compare(
    champion: "str | ModelVersion",
    challenger: "str | ModelVersion",
    *,
    test: Any = None,
    recent: Any = None,
    alpha: float = ALPHA,
    min_gain: float = MIN_GAIN,
    store: bool = True,
    cause: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> Comparison:
    """Compare ``challenger`` with ``champion`` on the same rows; stored with the challenger (``store=True``).

    ``test``: rows the challenger must not be worse on (default: the champion's stored
    test split); ``recent``: audit-labeled recent rows it must be better on, by at least
    ``min_gain`` in accuracy (default: the labels its retrain held out). Both are
    one-sided exact McNemar tests at level ``alpha`` (see the module docstring). Signatures
    that differ are refused (:class:`~loopml.errors.Conflict`). A ``compare`` loop event
    records it. Example::

        c = compare("churn@production", "churn/2")
        c.decision, c.recent.p_value                  # ('promote', 6.1e-05)
    """
    import time

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 0.5:
        raise ArgumentError(f"Argument alpha should be a level above 0 and below 0.5, e.g. 0.01; got {alpha!r}")
    if isinstance(min_gain, bool) or not isinstance(min_gain, (int, float)) or not 0 <= min_gain < 1:
        raise ArgumentError(f"Argument min_gain should be an accuracy difference from 0 to 1, e.g. 0.02; got {min_gain!r}")
    registry = local_registry(registry_for(tracking_uri), "compare")
    champ_v = resolve_version(registry, champion)
    chall_v = resolve_version(registry, challenger)
    if (champ_v.name, champ_v.version) == (chall_v.name, chall_v.version):
        raise ArgumentError(f"Arguments champion and challenger should be two versions; both are {champ_v.ref}")
    check_signatures(champ_v, chall_v)
    test_ds = _as_dataset(registry, test, "test") if test is not None else _lineage_set(registry, champ_v, "test")
    recent_ds = _as_dataset(registry, recent, "recent") if recent is not None else _lineage_set(registry, chall_v, "recent")
    if test_ds is None and recent_ds is None:
        raise DataError(f"Nothing to compare {chall_v.ref} with {champ_v.ref} on: {champ_v.ref} has no stored test split "
                        "and no recent labels were given; pass test= and recent= (--test FILE --recent FILE)")
    champ, chall = scoring_model(registry, champ_v), scoring_model(registry, chall_v)
    test_r = _paired("test", test_ds, champ, chall, alpha, min_gain) if test_ds is not None else None
    recent_r = _paired("recent", recent_ds, champ, chall, alpha, min_gain) if recent_ds is not None else None
    ok = test_r is not None and test_r.passed and recent_r is not None and recent_r.passed
    result = Comparison(champion=champ_v.ref, challenger=chall_v.ref, alpha=float(alpha), min_gain=float(min_gain),
                        test=test_r, recent=recent_r, decision="promote" if ok else "keep",
                        reasons=_reasons(test_r, recent_r, alpha, min_gain), at=time.time())
    if store:
        registry.set_measurements(chall_v.name, chall_v.version, {MEASUREMENT: result.to_dict()})
    target = champion if isinstance(champion, str) else champ_v.ref
    LoopEvents(registry.store).record(
        target, champ_v.name, chall_v.version, "compare", "done", cause=dict(cause or {"command": "compare"}),
        details={"champion": champ_v.ref, "challenger": chall_v.ref, "decision": result.decision,
                 "reasons": result.reasons, "by": current_user()})
    return result


def comparison_of(ref: "str | ModelVersion", *, tracking_uri: str | None = None) -> Comparison:
    """The :class:`Comparison` stored with the challenger ``ref``; :class:`~loopml.errors.NotFound` when it has none."""
    version = resolve_version(registry_for(tracking_uri), ref)
    stored = (version.measurements or {}).get(MEASUREMENT)
    if not stored:
        raise NotFound(f"{version.ref} has no stored comparison; run: loopml compare CHAMPION {version.ref}")
    return Comparison.from_dict(stored)
