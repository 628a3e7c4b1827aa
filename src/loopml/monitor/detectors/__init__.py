"""The out-of-distribution detectors behind :class:`loopml.monitor.ood.OODGate`, one module each.

- :mod:`~loopml.monitor.detectors.vae`: :class:`VAEDetector`, reconstruction
  error of a small (variational) autoencoder fitted on in-distribution inputs;
- :mod:`~loopml.monitor.detectors.mahalanobis`: :class:`MahalanobisDetector`,
  Mahalanobis distance of a classifier's penultimate-layer features to the
  nearest class mean (shared covariance, Ledoit-Wolf shrinkage; Lee et al. 2018)
  or to a single Gaussian;
- :mod:`~loopml.monitor.detectors.base`: what they share: the
  :class:`CalibratedDetector` base class and its one calibration,
  :func:`calibrated_threshold` (the split-conformal ``(1 - rate)`` quantile of
  validation scores), and the input checks :func:`as_batch` / :func:`check_rate`.

Every detector scores with ``score(x) -> np.ndarray`` (one float64 per row, higher
is more unusual; a row with NaN scores +inf), holds its ``threshold`` and has
``config()`` / ``state_arrays()`` (NumPy; ``state_dict()`` as tensors) /
``from_state()`` for storage without pickle, and ``from_arrays()`` to build a fitted
one from its arrays; a detector rebuilt from NumPy arrays scores without importing torch::

    from loopml.monitor.detectors import MahalanobisDetector, VAEDetector

    vae = VAEDetector(epochs=40).fit(x_train)
    maha = MahalanobisDetector(model).fit(x_train, y_train)   # features: the input of model's last nn.Linear
    maha.calibrate(x_val, target_false_abstain=0.01)
    maha.score(x) > maha.threshold

Importing this package imports NumPy only; torch and scikit-learn are imported
when a detector is fitted (or scores through torch).
"""

from __future__ import annotations

from .base import (
    CalibratedDetector,
    Detector,
    as_batch,
    calibrated_threshold,
    check_rate,
    strictest_rate,
)
from .mahalanobis import MahalanobisDetector, joint_module, last_linear
from .vae import VAEDetector

__all__ = [
    "CalibratedDetector",
    "Detector",
    "MahalanobisDetector",
    "VAEDetector",
    "as_batch",
    "calibrated_threshold",
    "check_rate",
    "joint_module",
    "last_linear",
    "strictest_rate",
]
