"""What every out-of-distribution detector shares: the interface, the calibrated threshold, input checks.

A detector scores a batch with ``score(x) -> np.ndarray`` (one float64 per row,
higher is more unusual; a row with NaN scores +inf) and holds a ``threshold``
above which a row is unusual. Every detector calibrates that threshold the same
way (:meth:`CalibratedDetector.calibrate`, through :func:`calibrated_threshold`):
the split-conformal ``(1 - rate)`` quantile of its scores on validation rows, so
that about ``rate`` of new in-distribution rows score above it. A detector is
stored without pickle as ``config()`` (JSON) and ``state_arrays()`` (NumPy), and
rebuilt with its class's ``from_state(config, state)``.

>>> calibrated_threshold(np.arange(100.0), target_false_abstain=0.01)   # the 100th smallest of 100 scores
99.0
>>> strictest_rate(99)
0.01
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from ...errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CalibratedDetector",
    "Detector",
    "TorchThreads",
    "as_batch",
    "calibrated_threshold",
    "check_rate",
    "check_shape",
    "finite_or_inf",
    "stored_threshold",
    "strictest_rate",
    "to_numpy",
]


# -- inputs ----------------------------------------------------------------------


def as_batch(x: Any, what: str = "x") -> np.ndarray:
    """A float32, C-contiguous batch with at least one row (tensors and arrays accepted).

    >>> as_batch(torch.zeros(2, 3)).dtype, as_batch(np.ones((1, 4), dtype=np.float64)).shape
    (dtype('float32'), (1, 4))
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ArgumentTypeError(f"Argument {what} should be a numpy array or torch tensor with a batch dimension; got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ArgumentError(f"Argument {what} should be a batch of shape (N, ...) with N >= 1; got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def to_numpy(value: Any) -> np.ndarray:
    """A stored tensor or array as NumPy (torch tensors accepted without importing torch here)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def check_shape(x: np.ndarray, shape: Sequence[int] | None, what: str) -> None:
    """Refuse a batch whose rows do not have the shape the detector was fitted on."""
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ArgumentError(
            f"Argument {what} should have rows of shape {tuple(shape)} (as when the detector was fitted), "
            f"e.g. a batch of shape (N, {', '.join(map(str, shape))}); got {tuple(x.shape)}"
        )


def finite_or_inf(scores: np.ndarray) -> np.ndarray:
    """Scores with NaN (from a NaN input) made +inf: ``NaN > threshold`` is False, and such a row must abstain."""
    return np.where(np.isfinite(scores), scores, np.inf)


class TorchThreads:
    """Set torch's thread count once in every thread that scores (docs/benchmarks.md, "Threads": a server's worker threads)."""

    def __init__(self, threads: int) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ArgumentError(f"Argument threads should be a whole number >= 1, e.g. threads=1; got {threads!r}")
        self.threads = threads
        self._local = threading.local()

    def ensure(self) -> None:
        if not getattr(self._local, "done", False):
            import torch

            torch.set_num_threads(self.threads)
            self._local.done = True


# -- the calibrated threshold ------------------------------------------------------


def check_rate(rate: Any) -> float:
    """``target_false_abstain`` checked: a fraction above 0 and below 0.5."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 0.5:
        raise ArgumentError(
            f"Argument target_false_abstain should be a fraction above 0 and below 0.5, e.g. 0.01 for 1%; got {rate!r}"
        )
    return float(rate)


def calibrated_threshold(scores: np.ndarray, target_false_abstain: float) -> float:
    """The threshold above which about ``target_false_abstain`` of new in-distribution rows score.

    The ``(1 - rate)`` quantile of the validation scores with the finite-sample
    (split-conformal) correction: the ``ceil((n + 1)(1 - rate))``-th smallest
    score, so that a new exchangeable row scores above it with probability at
    most ``rate``. Needs ``n >= 1/rate - 1`` rows (99 for 1%).
    """
    rate = check_rate(target_false_abstain)
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = s.size
    # - 1e-9: (n + 1) * (1 - rate) is a whole number at rate = 1/(n+1), which float rounding can push above it
    k = math.ceil((n + 1) * (1 - rate) - 1e-9)
    if k > n:
        need = math.ceil(1 / rate - 1 - 1e-9)
        raise ArgumentError(
            f"Argument val_x should have at least {need} rows to calibrate a false-abstain rate of {rate:g}; got {n}. "
            "Pass more validation rows or a larger target_false_abstain."
        )
    if not np.isfinite(s[k - 1]):
        raise ArgumentError("Argument val_x gave non-finite scores (NaN or infinite inputs?); calibrate on clean validation data")
    return float(s[k - 1])


def strictest_rate(rows: int) -> float:
    """The smallest false-abstain rate that ``rows`` validation rows can calibrate (1 / (rows + 1)),
    rounded up to 4 decimals: 0.0117 for 85 rows, 0.01 for 99.

    >>> strictest_rate(85)
    0.0117
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ArgumentError(f"Argument rows should be a whole number >= 0; got {rows!r}")
    return math.ceil(10_000 / (rows + 1)) / 10_000


def stored_threshold(value: Any) -> float | None:
    """A threshold as stored in a detector's config (None: not calibrated)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgumentError(f"Argument threshold should be a finite number or None; got {value!r}")
    return float(value)


# -- the interface -----------------------------------------------------------------


class Detector(Protocol):
    """What :class:`~loopml.monitor.ood.OODGate` needs of a detector (every :class:`CalibratedDetector` has it)."""

    kind: str
    threshold: float | None

    def score(self, x: Any) -> np.ndarray: ...

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> float: ...

    def config(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, "torch.Tensor"]: ...

    def state_arrays(self) -> dict[str, np.ndarray]: ...


class CalibratedDetector(abc.ABC):
    """The base of every detector: a subclass scores, describes and stores itself; the threshold is calibrated here.

    Subclasses set ``kind`` and implement :meth:`score`, :meth:`config` (JSON-safe,
    with ``kind`` and ``threshold``), :meth:`state_arrays` and a ``from_state``
    classmethod; :meth:`calibrate` and :meth:`state_dict` are the same for all.
    """

    kind: str  # set by each subclass, e.g. "vae"
    threshold: float | None = None

    @abc.abstractmethod
    def score(self, x: Any) -> np.ndarray:
        """One score per row (float64), higher is more unusual; NaN inputs score +inf."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """The detector's settings and threshold, JSON-safe (what :meth:`OODGate.save` writes to ``ood_gate.json``)."""

    @abc.abstractmethod
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as NumPy arrays (what :meth:`OODGate.save` stores, readable without torch)."""

    def calibrate(self, val_x: Any, target_false_abstain: float = 0.01) -> float:
        """Set and return :attr:`threshold` for this detector alone (see :func:`calibrated_threshold`)."""
        self.threshold = calibrated_threshold(self.score(val_x), target_false_abstain)
        return self.threshold

    def state_dict(self) -> dict[str, "torch.Tensor"]:
        """:meth:`state_arrays` as torch tensors."""
        import torch

        return {k: torch.from_numpy(v) for k, v in self.state_arrays().items()}

