"""Stage 7 of the loop: watch what a served model sees.

- :mod:`loopml.monitor.ood`: out-of-distribution detectors (a variational
  autoencoder scored by reconstruction error, Mahalanobis distance on the
  classifier's penultimate features) and the :class:`~loopml.monitor.ood.OODGate`
  that the server asks before it answers, calibrated for a false-abstain rate
  (``fit_gate`` on a live model)
- :mod:`loopml.monitor.versions`: a registered version's gate, fitted on its data
  and stored with its files (``fit_ood`` / ``load_gate``)
- :mod:`loopml.monitor.multivariate`: ``multivariate_drift``, a classifier two-sample
  test of the joint distribution (catches a correlation that flips)
- :mod:`loopml.monitor.performance`: accuracy from feedback labels per window
  (``live_accuracy``), a label-free estimate calibrated on a version's validation
  split (``calibrate_version``, ``estimated_accuracy``, ``live_estimate``) and DDM
  concept-drift detection on the stream of errors (``ddm``, ``feedback_drift``)
- :mod:`loopml.monitor.fromlog`: ``drift("digits@production", since="1h")``, a version's
  request log against its training data, or ``drift(reference, current)`` of any two tables
- :mod:`loopml.monitor.watch`: ``check`` / ``watch``, the scheduled cycle over the newest window of
  a version's request log: predictions, drift and performance stored per window, alert rules checked
- :mod:`loopml.monitor.univariate`: per-feature data drift of two tables
  -> :class:`~loopml.monitor.univariate.DriftReport` (tests and effect sizes in
  :mod:`loopml.monitor.stats`, the HTML page in :mod:`loopml.monitor.drift_html`)

>>> from loopml.monitor import fit_ood, load_gate
>>> gate = fit_ood("digits/1", train=parts.train, val=parts.val)    # stored with digits/1
>>> noise = torch.rand(100, 1, 8, 8)
>>> bool(load_gate("digits/1").abstain(noise).all())               # "I don't know" to every one
True

Submodules import torch, scikit-learn or SciPy and pandas; this package imports nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_LAZY = {
    "ConfidenceCalibration": "loopml.monitor.performance",
    "DDMResult": "loopml.monitor.performance",
    "DriftReport": "loopml.monitor.univariate",
    "MahalanobisDetector": "loopml.monitor.ood",
    "OODGate": "loopml.monitor.ood",
    "VAEDetector": "loopml.monitor.ood",
    "calibrate_version": "loopml.monitor.performance",
    "ddm": "loopml.monitor.performance",
    "drift": "loopml.monitor.fromlog",
    "estimated_accuracy": "loopml.monitor.performance",
    "feedback_drift": "loopml.monitor.performance",
    "feedback_outcomes": "loopml.monitor.performance",
    "fit_gate": "loopml.monitor.ood",
    "fit_ood": "loopml.monitor.versions",
    "live_accuracy": "loopml.monitor.performance",
    "live_estimate": "loopml.monitor.performance",
    "load_gate": "loopml.monitor.versions",
    "multivariate_drift": "loopml.monitor.multivariate",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:
    from .ood import MahalanobisDetector, OODGate, VAEDetector, fit_gate
    from .multivariate import multivariate_drift
    from .performance import (
        ConfidenceCalibration,
        DDMResult,
        calibrate_version,
        ddm,
        estimated_accuracy,
        feedback_drift,
        feedback_outcomes,
        live_accuracy,
        live_estimate,
    )
    from .fromlog import drift
    from .univariate import DriftReport
    from .versions import fit_ood, load_gate


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
