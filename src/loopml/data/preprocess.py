"""``Preprocessor``: tabular preprocessing fitted on the training split that travels inside the model.

Standardisation, one-hot encoding of categorical columns and missing-value
imputation, fitted on the training rows and held as buffers of a
``torch.nn.Module``. Put it in front of the network and everything downstream
(the Trainer, ``register``, torch.export, ONNX, quantization, the model server,
drift and the OOD gate) sees raw rows and the same transform; no Python
preprocessing code runs at serving::

    from loopml import data
    from loopml.models.nets import MLP

    parts = data.split(data.load("breast_cancer"), val=0.15, test=0.15, seed=0)
    pre = data.Preprocessor().fit(parts.train)            # medians, means, stds of the train split only
    model = pre.then(MLP(pre.n_features_out, 2, hidden=[64]))   # torch.nn.Sequential(pre, mlp)

The transform, column by column (the same as scikit-learn's
``SimpleImputer`` then ``StandardScaler`` on the numeric columns and
``SimpleImputer(strategy="most_frequent")`` then ``OneHotEncoder`` on the
categorical ones, in a ``ColumnTransformer``):

* numeric columns: NaN becomes the training median (or mean), then
  ``(x - mean) / std`` with the training mean and standard deviation (a
  constant column is divided by 1);
* categorical columns hold integer codes (as :func:`loopml.data.from_frame`
  makes them: the index into the column's sorted values); NaN becomes the
  most frequent training code, then one column per category (1.0 where the
  code matches). An unknown code gives a row of zeros;
* the output is the numeric columns, in input order, then the one-hot blocks.

NaN is replaced with ``torch.where(torch.isnan(x), fill, x)``, so imputation is
part of the exported graph. :meth:`Preprocessor.to_dict` gives the fitted
values as JSON; ``register`` records it in the version's signature, which also
maps category strings to codes and lets NaN (``null``) through only in the
columns that have an imputer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import ArgumentError, ArgumentTypeError
from .dataset import Dataset

__all__ = ["Preprocessor"]

SCALES = ("standard", None)
IMPUTE = ("median", "mean", None)
IMPUTE_CATEGORICAL = ("most_frequent", None)
KIND = "loopml.data.Preprocessor"


def _check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise ArgumentError(f"Argument {name} should be one of {shown}; got {value!r}")
    return value


class Preprocessor(torch.nn.Module):
    """Imputation, standardisation and one-hot encoding fitted on training rows, as a torch module.

    ``scale``: ``"standard"`` (subtract the mean, divide by the standard
    deviation) or ``None``. ``impute``: ``"median"``, ``"mean"`` or ``None`` for
    numeric columns; ``impute_categorical``: ``"most_frequent"`` or ``None``.
    Without an imputer, a column with missing training values is refused at
    :meth:`fit`, and the served model refuses NaN in it.

    >>> import numpy as np
    >>> from loopml.data import Preprocessor, from_arrays
    >>> ds = from_arrays(np.array([[1.0, 0.0], [3.0, 1.0], [np.nan, 1.0]]), [0, 1, 1],
    ...                  feature_names=["size", "color"], categories={"color": ["blue", "red"]})
    >>> pre = Preprocessor().fit(ds)
    >>> pre.output_names
    ['size', 'color=blue', 'color=red']
    >>> pre(torch.tensor([[2.0, float("nan")]])).tolist()      # median 2 -> 0 after scaling; NaN -> "red"
    [[0.0, 0.0, 1.0]]
    """

    num_index: torch.Tensor
    num_fill: torch.Tensor
    num_mean: torch.Tensor
    num_scale: torch.Tensor
    onehot_index: torch.Tensor
    onehot_code: torch.Tensor
    onehot_fill: torch.Tensor

    def __init__(
        self,
        *,
        scale: str | None = "standard",
        impute: str | None = "median",
        impute_categorical: str | None = "most_frequent",
    ) -> None:
        super().__init__()
        self.scale = _check_choice("scale", scale, SCALES)
        self.impute = _check_choice("impute", impute, IMPUTE)
        self.impute_categorical = _check_choice("impute_categorical", impute_categorical, IMPUTE_CATEGORICAL)
        self.feature_names: list[str] = []
        self.categories: dict[str, list[str]] = {}
        self._numeric: list[dict[str, Any]] = []
        self._categorical: list[dict[str, Any]] = []
        for name in ("num_index", "onehot_index"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int64))
        for name in ("num_fill", "num_mean", "num_scale", "onehot_code", "onehot_fill"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.float32))
        self._impute_num = self._impute_cat = False
        self.fitted = False

    # -- fitting ---------------------------------------------------------------------------

    def fit(
        self,
        data: Any,
        *,
        feature_names: Sequence[str] | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
    ) -> Preprocessor:
        """Fit on training rows and return ``self``.

        ``data``: a tabular :class:`~loopml.data.Dataset` (its ``feature_names``
        and ``categories`` are used), or a 2-D array or tensor with optional
        ``feature_names`` and ``categories`` (column name -> its values; the
        column holds their codes 0..k-1, NaN where missing). Fit on the training
        split only, never on validation or test rows.

        >>> pre = Preprocessor(impute=None).fit(np.array([[1.0], [3.0]]), feature_names=["a"])
        >>> pre.to_dict()["numeric"]
        [{'name': 'a', 'fill': None, 'mean': 2.0, 'std': 1.0}]
        """
        if isinstance(data, Dataset):
            if data.kind != "tabular":
                raise ArgumentError(
                    f"Argument data should be a tabular Dataset (rows x features); got {data.kind} data of shape "
                    f"{tuple(data.x.shape)}: a Preprocessor standardises and one-hot encodes table columns"
                )
            x = data.x.detach().cpu().numpy().astype(np.float64)
            names = list(feature_names) if feature_names is not None else list(data.feature_names)
            cats = {**data.categories, **dict(categories or {})}
        else:
            x = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
            if x.dtype.kind not in "biuf":
                raise ArgumentTypeError(
                    f"Argument data should hold numbers (categorical columns as codes, see loopml.data.from_frame); "
                    f"got dtype {x.dtype}"
                )
            x = x.astype(np.float64)
            if x.ndim != 2:
                raise ArgumentError(f"Argument data should be 2-D (rows x features); got shape {x.shape}")
            names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(x.shape[1])]
            cats = dict(categories or {})
        if len(x) == 0:
            raise ArgumentError("Argument data should have at least one row to fit on; got 0 rows")
        if len(names) != x.shape[1] or len(set(names)) != len(names):
            raise ArgumentError(
                f"Argument feature_names should have one distinct name per column ({x.shape[1]}); got {names!r}"
            )
        unknown = sorted(set(cats) - set(names))
        if unknown:
            raise ArgumentError(f"Argument categories should name columns of the data; unknown {unknown}, columns: {names}")
        numeric: list[dict[str, Any]] = []
        categorical: list[dict[str, Any]] = []
        for j, name in enumerate(names):
            col = x[:, j]
            nan = np.isnan(col)
            if np.isinf(col).any():
                raise ArgumentError(f"Column {name!r} holds infinity; replace it (or mark it missing with NaN) before fitting")
            if nan.all():
                raise ArgumentError(f"Column {name!r} has no value in any training row; drop it before fitting")
            values = col[~nan]
            if name in cats:
                labels = [str(v) for v in cats[name]]
                if not labels:
                    raise ArgumentError(f"Argument categories should list at least one value for {name!r}")
                if (values != np.round(values)).any() or values.min() < 0 or values.max() >= len(labels):
                    raise ArgumentError(
                        f"Column {name!r} should hold category codes 0..{len(labels) - 1} (NaN where missing); "
                        f"got values from {values.min():g} to {values.max():g}"
                    )
                code: int | None = None
                if nan.any() and self.impute_categorical is None:
                    raise ArgumentError(self._missing_message(name, int(nan.sum()), "impute_categorical='most_frequent'"))
                if self.impute_categorical is not None:
                    code = int(np.bincount(values.astype(np.int64), minlength=len(labels)).argmax())  # ties: smallest
                categorical.append({"name": name, "index": j, "categories": labels, "fill": code})
            else:
                fill: float | None = None
                if nan.any() and self.impute is None:
                    raise ArgumentError(self._missing_message(name, int(nan.sum()), "impute='median'"))
                if self.impute is not None:
                    fill = float(np.median(values) if self.impute == "median" else np.mean(values))
                    col = np.where(nan, np.float64(fill), col)
                mean, std = (float(np.mean(col)), float(np.std(col))) if self.scale else (0.0, 1.0)
                if not std > 1e-12 * max(1.0, abs(mean)):  # a constant column: divided by 1, as StandardScaler does
                    std = 1.0
                numeric.append({"name": name, "index": j, "fill": fill, "mean": mean, "std": std})
        self._set(names, numeric, categorical)
        return self

    @staticmethod
    def _missing_message(name: str, count: int, fix: str) -> str:
        return (
            f"Column {name!r} has {count} missing training values and no imputer; pass {fix} to "
            "Preprocessor(...), or drop those rows"
        )

    def _set(self, names: list[str], numeric: list[dict[str, Any]], categorical: list[dict[str, Any]]) -> None:
        if not numeric and not categorical:
            raise ArgumentError("Argument data should have at least one column to fit on; got 0 columns")
        self.feature_names = list(names)
        self._numeric = numeric
        self._categorical = categorical
        self.categories = {c["name"]: list(c["categories"]) for c in categorical}

        def floats(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        self.num_index = torch.tensor([c["index"] for c in numeric], dtype=torch.int64)
        self.num_fill = floats([c["fill"] if c["fill"] is not None else 0.0 for c in numeric])
        self.num_mean = floats([c["mean"] for c in numeric])
        self.num_scale = floats([c["std"] for c in numeric])
        # one entry per one-hot output column: which input column, which code, what fills a NaN
        index, code, fill = [], [], []
        for c in categorical:
            for k in range(len(c["categories"])):
                index.append(c["index"])
                code.append(float(k))
                fill.append(float(c["fill"]) if c["fill"] is not None else math.nan)
        self.onehot_index = torch.tensor(index, dtype=torch.int64)
        self.onehot_code = floats(code)
        self.onehot_fill = floats(fill)
        self._num_identity = [c["index"] for c in numeric] == list(range(len(names)))  # no Gather in the graph
        self._impute_num = any(c["fill"] is not None for c in numeric)
        self._impute_cat = any(c["fill"] is not None for c in categorical)
        self.fitted = True

    # -- the transform ---------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("This Preprocessor is not fitted; call pre.fit(train_split) before using it")
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ArgumentError(
                f"The Preprocessor should get rows of {len(self.feature_names)} raw features "
                f"({', '.join(self.feature_names[:5])}{', ...' if len(self.feature_names) > 5 else ''}); "
                f"got shape {tuple(x.shape)}"
            )
        parts = []
        if self._numeric:
            v = x if self._num_identity else x.index_select(1, self.num_index)
            if self._impute_num:
                v = torch.where(torch.isnan(v), self.num_fill, v)
            if self.scale is not None:
                v = (v - self.num_mean) / self.num_scale
            parts.append(v)
        if self._categorical:
            c = x.index_select(1, self.onehot_index)
            if self._impute_cat:
                c = torch.where(torch.isnan(c), self.onehot_fill, c)
            parts.append((c == self.onehot_code).to(x.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def then(self, model: torch.nn.Module) -> torch.nn.Sequential:
        """``torch.nn.Sequential(self, model)``: the model that takes raw rows.

        >>> pre = Preprocessor().fit(np.array([[1.0, 5.0], [3.0, 7.0]]))
        >>> model = pre.then(torch.nn.Linear(pre.n_features_out, 2))    # e.g. loopml.models.nets.MLP
        >>> model(torch.tensor([[2.0, 6.0]])).shape
        torch.Size([1, 2])
        """
        if not isinstance(model, torch.nn.Module):
            raise ArgumentTypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
        return torch.nn.Sequential(self, model)

    # -- description -----------------------------------------------------------------------

    @property
    def n_features_in(self) -> int:
        """The number of raw input columns."""
        return len(self.feature_names)

    @property
    def n_features_out(self) -> int:
        """The number of columns the transform produces (the next layer's input width)."""
        return len(self._numeric) + sum(len(c["categories"]) for c in self._categorical)

    @property
    def output_names(self) -> list[str]:
        """The output columns' names: numeric columns, then ``"column=value"`` per category."""
        return [c["name"] for c in self._numeric] + [
            f"{c['name']}={v}" for c in self._categorical for v in c["categories"]
        ]

    @property
    def imputed_columns(self) -> list[str]:
        """The input columns that have an imputer (where NaN may be served), in input order."""
        filled = {c["name"] for c in (*self._numeric, *self._categorical) if c["fill"] is not None}
        return [n for n in self.feature_names if n in filled]

    def extra_repr(self) -> str:
        if not self.fitted:
            return "not fitted"
        return (
            f"{self.n_features_in} -> {self.n_features_out} features: {len(self._numeric)} numeric "
            f"(impute={self.impute}, scale={self.scale}), {len(self._categorical)} categorical "
            f"(impute={self.impute_categorical}, one-hot)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The fitted values as JSON-ready data (stored with a registered version), read by :meth:`from_dict`."""
        if not self.fitted:
            raise RuntimeError("This Preprocessor is not fitted; call pre.fit(train_split) first")
        return {
            "kind": KIND,
            "scale": self.scale,
            "impute": self.impute,
            "impute_categorical": self.impute_categorical,
            "inputs": list(self.feature_names),
            "numeric": [{k: c[k] for k in ("name", "fill", "mean", "std")} for c in self._numeric],
            "categorical": [
                {"name": c["name"], "categories": list(c["categories"]),
                 "fill": None if c["fill"] is None else c["categories"][c["fill"]]}
                for c in self._categorical
            ],
            "outputs": self.output_names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """A fitted Preprocessor from :meth:`to_dict`'s output; raises ``ValueError`` naming a bad field.

        >>> pre = Preprocessor().fit(np.array([[1.0], [3.0]]))
        >>> Preprocessor.from_dict(pre.to_dict()).to_dict() == pre.to_dict()
        True
        """
        if not isinstance(data, Mapping) or data.get("kind") != KIND:
            raise ArgumentError(f"Argument data should be the output of Preprocessor.to_dict() (kind {KIND!r})")
        try:
            pre = cls(scale=data["scale"], impute=data["impute"], impute_categorical=data["impute_categorical"])
            names = [str(n) for n in data["inputs"]]
            position = {n: i for i, n in enumerate(names)}
            numeric = [
                {"name": c["name"], "index": position[c["name"]], "fill": c["fill"],
                 "mean": float(c["mean"]), "std": float(c["std"])}
                for c in data["numeric"]
            ]
            categorical = []
            for c in data["categorical"]:
                labels = [str(v) for v in c["categories"]]
                fill = None if c["fill"] is None else labels.index(str(c["fill"]))
                categorical.append({"name": c["name"], "index": position[c["name"]], "categories": labels, "fill": fill})
        except (KeyError, TypeError, ValueError) as exc:
            raise ArgumentError(f"Argument data is not a complete Preprocessor description ({type(exc).__name__}: {exc})") from None
        pre._set(names, numeric, categorical)
        return pre


def find_preprocessor(model: torch.nn.Module) -> Preprocessor | None:
    """The one fitted :class:`Preprocessor` inside ``model`` (None if there is none).

    Raises ``ValueError`` when there are several: which one reads the raw rows would be a guess.
    """
    found = [m for m in model.modules() if isinstance(m, Preprocessor)]
    if len(found) > 1:
        raise ArgumentError(
            f"The model holds {len(found)} Preprocessors; loopml records one input transform per model: "
            "fit one Preprocessor on all raw columns"
        )
    return found[0] if found and found[0].fitted else None
