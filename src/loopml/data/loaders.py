"""The scikit-learn datasets that ship with the wheel, by name: ``load("digits")``.

=================  ================  ========================  ====================
name               task              x                         classes
=================  ================  ========================  ====================
``digits``         classification    1,797 x 1 x 8 x 8 images  10 (``"0"`` .. ``"9"``)
``breast_cancer``  classification    569 x 30                  malignant, benign
``wine``           classification    178 x 13                  class_0 .. class_2
``iris``           classification    150 x 4                   setosa, versicolor, virginica
``diabetes``       regression        442 x 10                  (targets: float32)
=================  ================  ========================  ====================

Digit pixels are scaled from 0..16 to 0..1. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ArgumentError
from .dataset import Dataset

__all__ = ["NAMES", "load"]

NAMES = ("breast_cancer", "diabetes", "digits", "iris", "wine")


def _sklearn(loader: str) -> Callable[[], Any]:
    def call() -> Any:
        try:
            import sklearn.datasets as skd
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "The bundled datasets need scikit-learn: pip install 'loopml[data]'"
            ) from exc
        return getattr(skd, loader)()

    return call


def load(name: str) -> Dataset:
    """One of scikit-learn's bundled datasets as a :class:`Dataset` (see the table above).

    >>> ds = load("wine")
    >>> ds.x.shape, ds.class_names
    (torch.Size([178, 13]), ['class_0', 'class_1', 'class_2'])
    """
    if name not in NAMES:
        raise ArgumentError(f"Argument name should be one of {', '.join(NAMES)}, got {name!r}")
    loader = f"load_{name}"
    bunch = _sklearn(loader)()
    source = f"sklearn.datasets.{loader}"
    if name == "digits":
        x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
        names = [str(c) for c in bunch.target_names]
        return Dataset(x, bunch.target, class_names=names, task="classification", name=name, source=source)
    if name == "diabetes":
        return Dataset(bunch.data, bunch.target, feature_names=bunch.feature_names, task="regression",
                       name=name, source=source)
    return Dataset(
        bunch.data, bunch.target, feature_names=list(bunch.feature_names),
        class_names=[str(c) for c in bunch.target_names], task="classification", name=name, source=source,
    )
