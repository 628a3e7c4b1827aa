"""``Dataset``: inputs and labels as tensors, with the names that describe them.

>>> import numpy as np, pandas as pd
>>> from loopml.data import from_arrays, from_frame, load
>>> ds = load("digits")                         # 1,797 images of 1x8x8, 10 classes
>>> ds.x.shape, ds.y.dtype
(torch.Size([1797, 1, 8, 8]), torch.int64)
>>> x, y = ds[0]                                # a map-style torch dataset
>>> from_arrays(np.random.rand(10, 3), np.arange(10) % 2)
<Dataset 'dataset' tabular (10, 3) classification, 2 classes>
>>> from_frame(pd.DataFrame({"size": [1.0, 2.0, 3.0], "label": ["cat", "dog", "cat"]}), target="label").class_names
['cat', 'dog']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..errors import ArgumentError, ArgumentTypeError
from .fingerprint import fingerprint_tensors

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TASKS", "Dataset", "as_array", "fingerprint", "from_arrays", "from_frame"]

TASKS = ("classification", "regression")


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` (an array, a tensor, a pandas object or a list of numbers) as a NumPy array; ``what`` names it in errors."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if type(value).__module__.startswith("pandas"):
        return np.asarray(value.to_numpy())
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ArgumentTypeError(f"Argument {what} should be a NumPy array, a tensor or a list of numbers: {exc}") from exc
    if arr.dtype == object:
        raise ArgumentTypeError(
            f"Argument {what} should hold numbers, got values of type object; "
            "for a table with text columns use loopml.data.from_frame(df, target=...)"
        )
    return arr


class Dataset(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Inputs ``x`` (float32, N x features or N x C x H x W) and labels ``y`` (N).

    ``y`` is int64 class indices for ``task="classification"`` (the default
    when ``y`` holds integers) and float32 targets for ``"regression"``.
    ``ds[i]`` is ``(x[i], y[i])``, so a ``torch.utils.data.DataLoader`` takes
    it as it is. ``categories`` maps a categorical feature to its values
    (``x`` holds their codes, NaN where missing).

    >>> ds = Dataset(np.zeros((4, 2)), [0, 1, 0, 1], feature_names=["a", "b"], name="toy")
    >>> len(ds), ds.class_names
    (4, ['0', '1'])
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        *,
        feature_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        task: str | None = None,
        name: str = "dataset",
        source: str = "arrays",
        categories: dict[str, list[str]] | None = None,
    ) -> None:
        xa, ya = as_array(x, "x"), as_array(y, "y")
        if xa.ndim not in (2, 4):
            raise ArgumentError(
                f"Argument x should be 2-D (rows x features) or 4-D (N x C x H x W images), got shape {xa.shape}; "
                "reshape it, e.g. x.reshape(len(x), -1) or x[:, None] for one-channel images"
            )
        if ya.ndim == 2 and ya.shape[1] == 1:
            ya = ya[:, 0]
        if ya.ndim != 1:
            raise ArgumentError(f"Argument y should be 1-D (one label per row), got shape {ya.shape}")
        if len(xa) != len(ya):
            raise ArgumentError(f"Argument y should have one label per row of x: x has {len(xa)} rows, y has {len(ya)}")
        if xa.dtype.kind not in "biuf" or ya.dtype.kind not in "biuf":
            raise ArgumentTypeError(f"Arguments x and y should hold numbers, got dtypes {xa.dtype} and {ya.dtype}")
        if task is None:
            integral = ya.dtype.kind in "biu" or bool(np.all(np.isfinite(ya)) and np.all(ya == np.round(ya)))
            task = "classification" if integral else "regression"
        if task not in TASKS:
            raise ArgumentError(f"Argument task should be one of {TASKS}, got {task!r}")
        if task == "classification":
            if ya.dtype.kind == "f" and not (np.all(np.isfinite(ya)) and np.all(ya == np.round(ya))):
                raise ArgumentError(
                    "Argument y should hold whole-number class indices for a classification task; "
                    "pass task='regression' for continuous targets, or encode classes as 0..K-1"
                )
            ya = ya.astype(np.int64)
            if len(ya) and ya.min() < 0:
                raise ArgumentError(f"Argument y should hold class indices 0..K-1, got {int(ya.min())}")
            n_classes = int(ya.max()) + 1 if len(ya) else 0
            if class_names is None:
                class_names = [str(i) for i in range(n_classes)]
            elif len(class_names) < n_classes:
                raise ArgumentError(
                    f"Argument class_names should name every class 0..{n_classes - 1}, got {len(class_names)} names"
                )
        else:
            ya = ya.astype(np.float32)
            if class_names is not None:
                raise ArgumentError("Argument class_names should be None for a regression task")
        n_features = int(np.prod(xa.shape[1:]))
        if feature_names is None:
            feature_names = [f"x{i}" for i in range(xa.shape[1])] if xa.ndim == 2 else []
        elif xa.ndim != 2 or len(feature_names) != n_features:
            raise ArgumentError(
                f"Argument feature_names should have one name per column of x ({xa.shape[1]}), "
                f"got {len(feature_names)}" if xa.ndim == 2 else "Argument feature_names should be None for images"
            )
        if not isinstance(name, str) or not name:
            raise ArgumentError(f"Argument name should be a non-empty string, got {name!r}")
        self.x = torch.from_numpy(np.ascontiguousarray(xa, dtype=np.float32))
        self.y = torch.from_numpy(np.ascontiguousarray(ya))
        self.task = task
        self.feature_names = [str(f) for f in feature_names]
        self.class_names = [str(c) for c in class_names] if class_names is not None else None
        self.name = name
        self.source = source
        self.categories = dict(categories or {})

    # -- torch map-style dataset ------------------------------------------

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        classes = f", {len(self.class_names)} classes" if self.class_names is not None else ""
        return f"<Dataset {self.name!r} {self.kind} {tuple(self.x.shape)} {self.task}{classes}>"

    # -- description ------------------------------------------------------

    @property
    def kind(self) -> str:
        """``"image"`` for N x C x H x W inputs, ``"tabular"`` for N x features."""
        return "image" if self.x.ndim == 4 else "tabular"

    @property
    def fingerprint(self) -> str:
        """The content hash of ``x`` and ``y`` (see :mod:`loopml.data.fingerprint`); cached."""
        cached = getattr(self, "_fingerprint", None)
        if cached is None or cached[0] is not self.x or cached[1] is not self.y:
            cached = (self.x, self.y, fingerprint_tensors(self.x, self.y))
            self._fingerprint = cached
        return cached[2]

    def schema(self) -> dict[str, Any]:
        """Feature names, dtypes, shapes and class names, as a JSON-ready dict."""
        return {
            "kind": self.kind,
            "task": self.task,
            "n_rows": len(self),
            "x": {"dtype": "float32", "shape": list(self.x.shape[1:])},
            "y": {"dtype": str(self.y.dtype).removeprefix("torch.")},
            "feature_names": list(self.feature_names),
            "class_names": None if self.class_names is None else list(self.class_names),
            "categories": {k: list(v) for k, v in self.categories.items()},
        }

    def subset(self, indices: Any, *, name: str | None = None) -> "Dataset":
        """The rows at ``indices`` (in that order) as a new Dataset with the same names."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return Dataset(
            self.x[idx],
            self.y[idx],
            feature_names=self.feature_names if self.kind == "tabular" else None,
            class_names=self.class_names,
            task=self.task,
            name=name or self.name,
            source=self.source,
            categories=self.categories,
        )


def from_arrays(x: Any, y: Any, **kwargs: Any) -> Dataset:
    """A Dataset from NumPy arrays, tensors or lists: ``from_arrays(x, y, name="mine")``."""
    return Dataset(x, y, **kwargs)


def from_frame(
    frame: "pd.DataFrame",
    *,
    target: str,
    task: str | None = None,
    name: str = "dataframe",
    class_names: Sequence[str] | None = None,
) -> Dataset:
    """A tabular Dataset from a DataFrame; column ``target`` becomes ``y``.

    Numeric and boolean columns are kept as float32; text and categorical
    columns are encoded as their category codes (sorted values, NaN where
    missing) and listed in ``ds.categories``. A text or categorical target is
    encoded the same way and its values become ``class_names``.

    >>> import pandas as pd
    >>> ds = from_frame(pd.DataFrame({"a": [1.0, 2.0], "c": ["x", "y"], "t": [0, 1]}), target="t")
    >>> ds.categories
    {'c': ['x', 'y']}
    >>> ds.x
    tensor([[1., 0.],
            [2., 1.]])
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise ArgumentTypeError(f"Argument frame should be a pandas DataFrame, got {type(frame).__name__}")
    if target not in frame.columns:
        raise ArgumentError(f"Argument target should be a column of frame, got {target!r}; columns: {list(frame.columns)}")
    features = frame.drop(columns=[target])
    columns: list[np.ndarray] = []
    categories: dict[str, list[str]] = {}
    for col in features.columns:
        series = features[col]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            columns.append(series.to_numpy(dtype=np.float64, na_value=np.nan))
        else:
            cat = series.astype("category")
            cat = cat.cat.reorder_categories(sorted(cat.cat.categories, key=str))
            codes = cat.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            columns.append(codes)
            categories[str(col)] = [str(v) for v in cat.cat.categories]
    x = np.stack(columns, axis=1) if columns else np.zeros((len(frame), 0))
    yser = frame[target]
    if pd.api.types.is_numeric_dtype(yser) or pd.api.types.is_bool_dtype(yser):
        y = yser.to_numpy()
    else:
        cat = yser.astype("category")
        cat = cat.cat.reorder_categories(sorted(cat.cat.categories, key=str))
        if (cat.cat.codes < 0).any():
            raise ArgumentError(f"Argument frame should have a label in every row of {target!r}; drop the rows without one")
        y = cat.cat.codes.to_numpy().astype(np.int64)
        class_names = class_names or [str(v) for v in cat.cat.categories]
        task = task or "classification"
    return Dataset(
        x, y, feature_names=[str(c) for c in features.columns], class_names=class_names, task=task,
        name=name, source="dataframe", categories=categories,
    )


def fingerprint(ds: Dataset) -> str:
    """The sha256 hex digest of ``ds``'s inputs and labels (see :mod:`loopml.data.fingerprint`).

    Example (run as the doctest of :mod:`loopml.data.fingerprint`)::

        fingerprint(load("iris"))  # '04a46cdd...'
    """
    if not isinstance(ds, Dataset):
        raise ArgumentTypeError(
            f"Argument ds should be a loopml.data.Dataset, got {type(ds).__name__}; "
            "make one with loopml.data.from_arrays(x, y)"
        )
    return fingerprint_tensors(ds.x, ds.y)
