"""What a model takes and returns: a :class:`Signature`, inferred from an input example.

A signature is stored with every registered model version and checked on every
prediction request, so that a wrong payload gets a message saying what was
expected instead of a shape error from deep inside a runtime. Example::

    import torch
    from loopml.models.signature import infer_signature

    sig = infer_signature(model, torch.randn(8, 64), class_names=[str(d) for d in range(10)])
    sig.input            # TensorSpec(name='x', dtype='float32', shape=(None, 64))
    batch = sig.validate([[0.0] * 64])      # a float32 array of shape (1, 64)

A tabular model's signature also keeps its feature names, so a request may name
its columns (one record, a list of records, or column-oriented lists); the
codes of categorical columns (a category string becomes its code at validation);
the columns where a missing value (NaN or ``null``) is allowed, because the
model's :class:`~loopml.data.Preprocessor` imputes them; and that
Preprocessor's fitted values (JSON) for ``loopml models show`` and drift::

    sig.validate({"mean radius": 17.99, "mean texture": 10.38, ...})           # one record
    sig.validate([{"mean radius": 17.99, ...}, {"mean radius": 20.57, ...}])  # records
    sig.validate({"mean radius": [17.99, 20.57], ...})                       # columns

loopml supports models with one tensor input and one tensor output, and graph
models (``model(x, edge_index)``, :mod:`loopml.models.graphs`), whose signature has
``kind="graph"`` and the two inputs ``x`` and ``edge_index``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ..errors import ArgumentError, ArgumentTypeError

if TYPE_CHECKING:
    import torch

__all__ = ["Signature", "TensorSpec", "infer_signature", "random_inputs"]

_SINGLE_IO = (
    "loopml supports models with a single tensor input and a single tensor output; "
    "wrap the model in a module whose forward takes and returns one tensor"
)


def _shape_text(shape: Sequence[int | None]) -> str:
    parts = ["batch" if i == 0 and d is None else ("any" if d is None else str(d)) for i, d in enumerate(shape)]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _check_dtype_name(dtype: object, field: str) -> str:
    if not isinstance(dtype, str):
        raise ArgumentError(f"Signature field {field!r} should be a numpy dtype name such as 'float32'; got {dtype!r}")
    try:
        kind = np.dtype(dtype).kind
    except TypeError as exc:
        raise ArgumentError(
            f"Signature field {field!r} should be a numpy dtype name such as 'float32'; got {dtype!r}"
        ) from exc
    if kind not in "biuf" or np.dtype(dtype).name != dtype:
        raise ArgumentError(
            f"Signature field {field!r} should be a numeric numpy dtype name (float32, int64, bool, ...); got {dtype!r}"
        )
    return dtype


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a signature: its name, numpy dtype name and shape.

    ``None`` in ``shape`` means any size; the batch dimension (first) is ``None``.
    Example::

        TensorSpec(name="x", dtype="float32", shape=(None, 1, 8, 8))
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"name": ..., "dtype": ..., "shape": [null, 64]}``."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, field: str = "spec") -> TensorSpec:
        """The inverse of :meth:`to_dict`; raises ``ValueError`` naming the bad field."""
        if not isinstance(data, Mapping):
            raise ArgumentError(f"Signature field {field!r} should be an object with name, dtype, shape; got {data!r}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ArgumentError(f"Signature field '{field}.name' should be a non-empty string; got {name!r}")
        dtype = _check_dtype_name(data.get("dtype"), f"{field}.dtype")
        shape = data.get("shape")
        if not isinstance(shape, (list, tuple)) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape
        ):
            raise ArgumentError(
                f"Signature field '{field}.shape' should be a list of sizes (ints >= 0, or null for any); got {shape!r}"
            )
        return cls(name=name, dtype=dtype, shape=tuple(shape))


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of a model, and its class names when it is a classifier.

    Build one with :func:`infer_signature`; store it with :meth:`to_dict`; check a
    request with :meth:`validate`. Example::

        sig = Signature(
            inputs=(TensorSpec("x", "float32", (None, 64)),),
            outputs=(TensorSpec("output", "float32", (None, 10)),),
            class_names=tuple("0123456789"),
        )
        sig.validate([[0.5] * 64]).shape   # (1, 64)
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    categories: Mapping[str, tuple[str, ...]] | None = None
    missing: tuple[str, ...] = ()
    preprocessing: Mapping[str, Any] | None = None
    kind: str | None = None
    """``"graph"`` for a graph model (inputs ``x`` and ``edge_index``, :mod:`loopml.models.graphs`); else None."""

    def __post_init__(self) -> None:
        _check_columns(self)

    @property
    def is_classifier(self) -> bool:
        """True when the signature carries class names (one per output column)."""
        return self.class_names is not None

    @property
    def is_graph(self) -> bool:
        """True for a graph model's signature (``model(x, edge_index)``, see :mod:`loopml.models.graphs`)."""
        return self.kind == "graph"

    @property
    def input(self) -> TensorSpec:
        """The single input's spec (loopml supports single-input models)."""
        if len(self.inputs) != 1:
            raise ArgumentError(f"{_SINGLE_IO}; this signature has {len(self.inputs)} inputs")
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        """The single output's spec."""
        if len(self.outputs) != 1:
            raise ArgumentError(f"{_SINGLE_IO}; this signature has {len(self.outputs)} outputs")
        return self.outputs[0]

    def named_from(self, schema: Mapping[str, Any] | None) -> Signature:
        """This signature with the column names and categories of a dataset schema, when it has none yet.

        ``schema`` is :meth:`loopml.data.Dataset.schema` (or a stored dataset's
        record); it is used only for a tabular dataset as wide as the input.
        Example::

            sig = sig.named_from(parts.train.schema())
        """
        if self.feature_names is not None or not isinstance(schema, Mapping) or schema.get("kind") != "tabular":
            return self
        names = schema.get("feature_names")
        shape = self.inputs[0].shape if len(self.inputs) == 1 else ()
        if not isinstance(names, list) or len(shape) != 2 or len(names) != shape[1] or len(set(names)) != len(names):
            return self
        cats = {str(k): tuple(str(c) for c in v) for k, v in (schema.get("categories") or {}).items() if v}
        return dataclasses.replace(self, feature_names=tuple(str(n) for n in names), categories=cats or None)

    def classes_from(self, schema: Mapping[str, Any] | None) -> Signature:
        """This signature with a classification dataset's class names, when it has none yet.

        Used only when the schema's task is classification and the model has one
        output with a column per class, so that a version registered without
        ``class_names=`` is still measured and served as a classifier. Example::

            sig = sig.classes_from(parts.train.schema())
        """
        if self.class_names is not None or not isinstance(schema, Mapping) or schema.get("task") != "classification":
            return self
        names = schema.get("class_names")
        shape = self.outputs[0].shape if len(self.outputs) == 1 else ()
        if not isinstance(names, list) or len(shape) != 2 or shape[1] != len(names) or len(names) < 2:
            return self
        return dataclasses.replace(self, class_names=tuple(str(n) for n in names))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, read back by :meth:`from_dict` (the column fields only when set)."""
        out: dict[str, Any] = {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "class_names": None if self.class_names is None else list(self.class_names),
        }
        if self.feature_names is not None:
            out["feature_names"] = list(self.feature_names)
        if self.categories:
            out["categories"] = {k: list(v) for k, v in self.categories.items()}
        if self.missing:
            out["missing"] = list(self.missing)
        if self.preprocessing is not None:
            out["preprocessing"] = dict(self.preprocessing)
        if self.kind is not None:
            out["kind"] = self.kind
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Read a signature written by :meth:`to_dict`.

        Raises ``ValueError`` naming the bad field, e.g. ``'inputs[0].shape'``.
        Example::

            Signature.from_dict(json.loads(text))
        """
        if not isinstance(data, Mapping):
            raise ArgumentError(f"A signature should be an object with inputs and outputs; got {type(data).__name__}")
        specs: dict[str, tuple[TensorSpec, ...]] = {}
        for key in ("inputs", "outputs"):
            items = data.get(key)
            if not isinstance(items, (list, tuple)) or not items:
                raise ArgumentError(f"Signature field {key!r} should be a non-empty list of tensor specs; got {items!r}")
            specs[key] = tuple(TensorSpec.from_dict(item, field=f"{key}[{i}]") for i, item in enumerate(items))
        names = data.get("class_names")
        if names is not None:
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise ArgumentError(f"Signature field 'class_names' should be a list of strings or null; got {names!r}")
            names = tuple(names)
            width = specs["outputs"][0].shape[-1] if specs["outputs"][0].shape else None
            if width is not None and len(names) != width:
                raise ArgumentError(
                    f"Signature field 'class_names' should have one name per output column ({width}); got {len(names)}"
                )
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise ArgumentError(f"Signature has unknown fields {sorted(unknown)}; expected {', '.join(_FIELDS)}")
        features = data.get("feature_names")
        if features is not None and (
            not isinstance(features, (list, tuple)) or not all(isinstance(n, str) for n in features)
        ):
            raise ArgumentError(f"Signature field 'feature_names' should be a list of strings or absent; got {features!r}")
        cats = data.get("categories")
        if cats is not None and (
            not isinstance(cats, Mapping)
            or not all(isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v) for v in cats.values())
        ):
            raise ArgumentError(f"Signature field 'categories' should map column names to lists of strings; got {cats!r}")
        missing = data.get("missing", ())
        if not isinstance(missing, (list, tuple)) or not all(isinstance(n, str) for n in missing):
            raise ArgumentError(f"Signature field 'missing' should be a list of column names; got {missing!r}")
        pre = data.get("preprocessing")
        if pre is not None and not isinstance(pre, Mapping):
            raise ArgumentError(f"Signature field 'preprocessing' should be an object or absent; got {pre!r}")
        kind = data.get("kind")
        if kind not in (None, "graph"):
            raise ArgumentError(f"Signature field 'kind' should be \"graph\" or absent; got {kind!r}")
        if kind == "graph" and [s.name for s in specs["inputs"]] != ["x", "edge_index"]:
            raise ArgumentError("A graph signature's inputs should be x and edge_index")
        return cls(
            inputs=specs["inputs"], outputs=specs["outputs"], class_names=names, kind=kind,
            feature_names=None if features is None else tuple(features),
            categories=None if cats is None else {str(k): tuple(v) for k, v in cats.items()},
            missing=tuple(missing), preprocessing=None if pre is None else dict(pre),
        )

    def validate(self, array: Any) -> np.ndarray:
        """Check a batch for the single input and return it as an array of the input's dtype.

        Accepts a numpy array or nested lists; a single row without the batch
        dimension comes back with a batch dimension of 1. Integers are cast to
        float for a float input. With feature names, also records by name: one
        ``{"a": 1.0, "b": 2.0}``, a list of them, column-oriented
        ``{"a": [1.0, 3.0], "b": [2.0, 4.0]}``, or a pandas DataFrame; a
        categorical column takes its category strings. Raises ``ValueError`` for
        a wrong rank, shape or dtype, NaN (outside the columns in ``missing``) or
        infinity, ragged lists, an empty batch, and missing or unknown columns
        (named). Example::

            sig.validate([[1, 2, 3, 4]])      # float32 array of shape (1, 4)
        """
        return self.parse(array)[0]

    def parse(self, array: Any) -> tuple[np.ndarray, bool]:
        """:meth:`validate`, and whether the request was one row (a row or a record without a batch).

        The model server answers a single row with one result, a batch with a list. Example::

            x, single = sig.parse({"a": 1.0, "b": 2.0})     # x.shape == (1, 2), single is True
        """
        spec = self.input
        kind_of = type(array)
        if kind_of is dict or (kind_of is list and array and type(array[0]) is dict) or _is_frame(array):
            arr, single = self._records(array)
            return self._check(arr, single)
        if isinstance(array, np.ndarray):
            arr = array
        else:
            try:
                arr = np.asarray(array)
            except ValueError as exc:  # numpy >= 1.24 refuses ragged nested lists
                raise ArgumentError(
                    f"input {spec.name!r} should be a rectangular array of shape {_shape_text(spec.shape)}; "
                    "got ragged nested lists (rows of different lengths)"
                ) from exc
        kind = arr.dtype.kind
        if kind in "OUS" and self.feature_names is not None and arr.ndim in (1, 2):
            # rows in column order that hold null or category strings: the same cell rules as records
            if kind in "US" and not isinstance(array, np.ndarray):
                arr = np.array(array, dtype=object)  # numbers beside strings stay numbers, not their text
            rows = arr[np.newaxis] if arr.ndim == 1 else arr
            if rows.shape[1] == len(self.feature_names):
                columns = [self._column(name, rows[:, j].tolist()) for j, name in enumerate(self.feature_names)]
                return self._check(np.stack(columns, axis=1), arr.ndim == 1)
        if kind == "O":
            raise ArgumentError(
                f"input {spec.name!r} should be numbers of dtype {spec.dtype} in shape {_shape_text(spec.shape)}; "
                "got ragged nested lists or non-numeric values"
            )
        return self._check(arr, False)

    def _check(self, arr: np.ndarray, single: bool) -> tuple[np.ndarray, bool]:
        spec = self.input
        want = np.dtype(spec.dtype)
        kind = arr.dtype.kind
        allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}.get(want.kind, want.kind)
        if kind not in allowed:
            raise ArgumentError(
                f"input {spec.name!r} should have dtype {spec.dtype}; got {_dtype_text(arr.dtype)}"
            )
        rank = len(spec.shape)
        if arr.ndim == rank - 1 and rank > 1:
            arr = arr[np.newaxis, ...]
            single = True
        if arr.ndim != rank or any(d is not None and d != n for d, n in zip(spec.shape, arr.shape)):
            raise ArgumentError(
                f"input {spec.name!r} should have shape {_shape_text(spec.shape)}; got {tuple(arr.shape)}"
            )
        if arr.shape[0] == 0:
            raise ArgumentError(f"input {spec.name!r} should have at least one row; got an empty batch {tuple(arr.shape)}")
        if kind == "f" and not np.isfinite(arr).all():
            self._check_missing(arr)
        if kind in "iu" and want.kind in "iu" and arr.size:
            info = np.iinfo(want)
            if arr.min() < info.min or arr.max() > info.max:
                raise ArgumentError(f"input {spec.name!r} has values outside the range of {spec.dtype}")
        if self.categories:
            self._check_codes(arr)
        return np.ascontiguousarray(arr, dtype=want), single

    # -- named columns -------------------------------------------------------------------

    def _check_missing(self, arr: np.ndarray) -> None:
        """NaN passes only in the columns in ``missing`` (imputed in the model); infinity never."""
        name = self.input.name
        if np.isinf(arr).any():
            raise ArgumentError(f"input {name!r} should hold finite numbers; got infinity")
        if not self.missing or self.feature_names is None:
            raise ArgumentError(f"input {name!r} should hold finite numbers; got NaN")
        nan_cols = np.isnan(arr).any(axis=0)
        ok = {self.feature_names.index(m) for m in self.missing}
        bad = [self.feature_names[j] for j in np.flatnonzero(nan_cols) if j not in ok]
        if bad:
            raise ArgumentError(
                f"input columns {bad} should hold numbers; got a missing value (NaN or null). "
                f"Only the columns the model imputes accept one: {list(self.missing)}"
            )

    def _check_codes(self, arr: np.ndarray) -> None:
        assert self.categories is not None and self.feature_names is not None
        for col, values in self.categories.items():
            v = arr[:, self.feature_names.index(col)]
            v = v[~np.isnan(v)] if v.dtype.kind == "f" else v
            if v.size and ((v != np.round(v)).any() or v.min() < 0 or v.max() >= len(values)):
                raise ArgumentError(
                    f"input column {col!r} should hold one of {list(values)} (or its code 0..{len(values) - 1}); "
                    f"got {v[(v != np.round(v)) | (v < 0) | (v >= len(values))][0]:g}"
                )

    def _records(self, raw: Any) -> tuple[np.ndarray, bool]:
        names = self.feature_names
        if names is None:
            width = self.input.shape[-1] if self.input.shape else None
            raise ArgumentError(
                f"input {self.input.name!r} has no column names in this model's signature; send rows as lists "
                f"of {width} numbers in order, e.g. {{\"inputs\": [[0.1, 0.2, ...]]}}, or register the model "
                "with feature_names=[...]"
            )
        if _is_frame(raw):
            raw = {str(c): raw[c].tolist() for c in raw.columns}
        if type(raw) is dict:
            if not raw:
                raise ArgumentError(f"input should name the model's columns; got an empty object. Columns: {_listing(names)}")
            lists = [type(v) is list for v in raw.values()]
            if all(lists):  # column-oriented
                self._check_keys(raw, "")
                sizes = {k: len(v) for k, v in raw.items()}
                if len(set(sizes.values())) > 1:
                    raise ArgumentError(f"input columns should all have the same number of values; got {sizes}")
                if not next(iter(sizes.values())):
                    raise ArgumentError("input should have at least one row; got columns with no values")
                return np.stack([self._column(n, raw[n]) for n in names], axis=1), False
            if any(lists):
                raise ArgumentError(
                    "input should be one record ({\"a\": 1.0, ...}) or columns ({\"a\": [1.0, 2.0], ...}); got a mix "
                    f"of lists and single values (lists in {[k for k, is_list in zip(raw, lists) if is_list][:5]})"
                )
            self._check_keys(raw, "")
            return np.stack([self._column(n, [raw[n]]) for n in names], axis=1), True
        for i, record in enumerate(raw):
            if type(record) is not dict:
                raise ArgumentError(
                    f"input should be a list of records (objects by column name); item {i} is {type(record).__name__}"
                )
            self._check_keys(record, f"record {i} ")
        return np.stack([self._column(n, [r[n] for r in raw]) for n in names], axis=1), False

    def _check_keys(self, record: Mapping[str, Any], where: str) -> None:
        names = self.feature_names
        assert names is not None
        if len(record) == len(names) and all(n in record for n in names):
            return
        missing = [n for n in names if n not in record]
        unknown = [k for k in record if k not in set(names)]
        parts = []
        if missing:
            parts.append(f"is missing columns {missing}")
        if unknown:
            parts.append(f"has unknown columns {unknown}")
        raise ArgumentError(f"input {where}{' and '.join(parts)}; the model takes {len(names)} columns: {_listing(names)}")

    def _column(self, name: str, values: list[Any]) -> np.ndarray:
        """One column's cells as float64: numbers, null (NaN), or a categorical column's strings (codes)."""
        cats = self.categories.get(name) if self.categories else None
        lookup = {c: float(i) for i, c in enumerate(cats)} if cats else {}
        out = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
                out[i] = v
            elif v is None or type(v).__name__ == "NAType":  # JSON null; pandas' NA
                out[i] = np.nan
            elif isinstance(v, str) and cats:
                code = lookup.get(v)
                if code is None:
                    raise ArgumentError(f"input column {name!r} should hold one of {list(cats)}; got {v!r}")
                out[i] = code
            else:
                what = f"one of {list(cats)}" if cats else "a number"
                raise ArgumentError(f"input column {name!r} should hold {what} (or null where missing); got {v!r}")
        return out


_FIELDS = ("inputs", "outputs", "class_names", "feature_names", "categories", "missing", "preprocessing", "kind")


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _listing(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check_columns(sig: Signature) -> None:
    """The column fields agree with each other and with a 2-D input (raises ValueError naming the field)."""
    names = sig.feature_names
    if names is None:
        if sig.categories or sig.missing:
            raise ArgumentError("Signature fields 'categories' and 'missing' need 'feature_names'")
        return
    if len(sig.inputs) != 1 or len(sig.inputs[0].shape) != 2:
        raise ArgumentError("Signature field 'feature_names' should only be set for one 2-D input (rows x features)")
    width = sig.inputs[0].shape[1]
    if len(names) != width or len(set(names)) != len(names):
        raise ArgumentError(
            f"Signature field 'feature_names' should have one distinct name per input column ({width}); got {list(names)}"
        )
    unknown = sorted((set(sig.categories or ()) | set(sig.missing)) - set(names))
    if unknown:
        raise ArgumentError(f"Signature fields 'categories' and 'missing' should name input columns; unknown {unknown}")


def _dtype_text(dtype: np.dtype[Any]) -> str:
    return {"U": "strings", "S": "bytes", "b": "bool", "O": "objects", "c": "complex numbers"}.get(
        dtype.kind, dtype.name
    )


def _numpy_dtype_name(dtype: torch.dtype) -> str:
    import torch

    try:
        return str(torch.empty(0, dtype=dtype).numpy().dtype)
    except TypeError:  # bfloat16 and friends have no numpy dtype
        return str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def infer_signature(
    model: torch.nn.Module,
    input_example: torch.Tensor | np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    input_name: str = "x",
    output_name: str = "output",
    feature_names: Sequence[str] | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
) -> Signature:
    """Run ``model`` once on ``input_example`` (with a batch dimension) and record its signature.

    The model runs in eval mode under ``torch.no_grad`` (its mode is restored
    afterwards). The batch dimension is recorded as ``None``. ``class_names`` must
    have one name per output column. For rows x features input,
    ``feature_names`` (one per column) lets requests name their columns and
    ``categories`` maps a categorical column to its values (the column holds
    their codes). A fitted :class:`~loopml.data.Preprocessor` inside the model
    that reads the raw columns gives all three: names, categories, the columns
    it imputes (``missing``), and its fitted values (``preprocessing``). Example::

        sig = infer_signature(model, torch.randn(8, 1, 8, 8), class_names=[str(d) for d in range(10)])
        sig.to_dict()["inputs"]   # [{'name': 'x', 'dtype': 'float32', 'shape': [None, 1, 8, 8]}]
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(input_example, np.ndarray):
        input_example = torch.from_numpy(np.ascontiguousarray(input_example))
    if not isinstance(input_example, torch.Tensor):
        raise ArgumentError(
            f"Argument input_example should be one torch.Tensor or numpy array; got {type(input_example).__name__}. "
            + _SINGLE_IO
        )
    if input_example.ndim < 1 or input_example.shape[0] < 1:
        raise ArgumentError(
            "Argument input_example should have a batch dimension with at least one row; "
            f"got shape {tuple(input_example.shape)}"
        )
    with eval_mode(model), torch.no_grad():
        output = model(input_example)
    if not isinstance(output, torch.Tensor):
        raise ArgumentError(f"The model returned {type(output).__name__}, not a tensor. " + _SINGLE_IO)
    if output.ndim < 1 or output.shape[0] != input_example.shape[0]:
        raise ArgumentError(
            f"The model's output should have the batch dimension first ({input_example.shape[0]} rows); "
            f"got shape {tuple(output.shape)}"
        )
    inputs = (TensorSpec(input_name, _numpy_dtype_name(input_example.dtype), (None, *input_example.shape[1:])),)
    outputs = (TensorSpec(output_name, _numpy_dtype_name(output.dtype), (None, *output.shape[1:])),)
    names: tuple[str, ...] | None = None
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
            raise ArgumentError(f"Argument class_names should be a list of strings; got {class_names!r}")
        names = tuple(class_names)
        if output.ndim != 2 or output.shape[1] != len(names):
            raise ArgumentError(
                f"Argument class_names should have one name per output column; the model returns shape "
                f"{_shape_text(outputs[0].shape)} and {len(names)} names were given"
            )
        if len(set(names)) != len(names):
            raise ArgumentError(f"Argument class_names should have no duplicates; got {list(names)}")
    columns = _columns(model, inputs[0], feature_names, categories)
    return Signature(inputs=inputs, outputs=outputs, class_names=names, **columns)


def _columns(
    model: torch.nn.Module,
    spec: TensorSpec,
    feature_names: Sequence[str] | None,
    categories: Mapping[str, Sequence[str]] | None,
) -> dict[str, Any]:
    """The signature's column fields, from the arguments and the model's Preprocessor."""
    from ..data.preprocess import find_preprocessor

    width = spec.shape[1] if len(spec.shape) == 2 else None
    pre = find_preprocessor(model)
    if pre is not None and pre.n_features_in != width:
        pre = None  # it does not read the raw input (it sits deeper in the model)
    if feature_names is not None:
        if isinstance(feature_names, str) or not all(isinstance(n, str) for n in feature_names):
            raise ArgumentError(f"Argument feature_names should be a list of strings; got {feature_names!r}")
        if width is None or len(feature_names) != width or len(set(feature_names)) != len(feature_names):
            raise ArgumentError(
                f"Argument feature_names should have one distinct name per input column; the input has shape "
                f"{_shape_text(spec.shape)} and {len(feature_names)} names were given"
            )
        if pre is not None and list(feature_names) != pre.feature_names:
            raise ArgumentError(
                "Argument feature_names should match the model's Preprocessor (fitted on columns "
                f"{_listing(pre.feature_names)}); got {_listing(list(feature_names))}"
            )
    if pre is not None:
        return {
            "feature_names": tuple(pre.feature_names),
            "categories": {k: tuple(v) for k, v in pre.categories.items()} or None,
            "missing": tuple(pre.imputed_columns),
            "preprocessing": pre.to_dict(),
        }
    if feature_names is None:
        if categories:
            raise ArgumentError("Argument categories needs feature_names (the columns it refers to)")
        return {}
    cats = None
    if categories:
        if not isinstance(categories, Mapping) or not all(
            isinstance(v, (list, tuple)) and v and all(isinstance(c, str) for c in v) for v in categories.values()
        ):
            raise ArgumentError(f"Argument categories should map column names to lists of strings; got {categories!r}")
        cats = {str(k): tuple(v) for k, v in categories.items()}
    return {"feature_names": tuple(feature_names), "categories": cats}


def random_inputs(
    signature: Signature,
    n: int,
    *,
    seed: int = 0,
    like: torch.Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """``n`` random inputs that :meth:`Signature.validate` accepts, for checking an export.

    Floats are uniform within ``like``'s min and max when an example is given,
    else standard normal; integers are uniform in ``[0, 10)`` (or ``like``'s range).
    Dimensions that are ``None`` besides the batch take ``like``'s size. Example::

        x = random_inputs(sig, 100, like=x_train[:32])
        verify(predict, model, x)
    """
    if not isinstance(n, int) or n < 1:
        raise ArgumentError(f"Argument n should be an int >= 1; got {n!r}")
    spec = signature.input
    ref: np.ndarray | None = None
    if like is not None:
        ref = like.detach().cpu().numpy() if hasattr(like, "detach") else np.asarray(like)
    shape: list[int] = [n]
    for i, d in enumerate(spec.shape[1:], start=1):
        if d is not None:
            shape.append(d)
        elif ref is not None and ref.ndim == len(spec.shape):
            shape.append(int(ref.shape[i]))
        else:
            raise ArgumentError(
                f"Argument like should be given: dimension {i} of input {spec.name!r} has no fixed size"
            )
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    finite = ref[np.isfinite(ref)] if ref is not None and ref.dtype.kind == "f" else ref
    lo, hi = (float(finite.min()), float(finite.max())) if finite is not None and finite.size else (None, None)
    if dtype.kind in "iu":
        low, high = (int(lo), int(hi) + 1) if lo is not None and hi is not None else (0, 10)
        return rng.integers(low, high, size=shape).astype(dtype)
    if lo is None or hi is None:
        out = rng.standard_normal(size=shape).astype(dtype)
    else:
        out = rng.uniform(lo, hi, size=shape).astype(dtype)
    if signature.categories and signature.feature_names is not None:  # categorical columns take valid codes
        for col, values in signature.categories.items():
            out[:, signature.feature_names.index(col)] = rng.integers(0, len(values), size=n)
    for col in signature.missing:  # imputed columns also get missing values, so a check covers the imputation
        out[rng.random(n) < 0.1, signature.feature_names.index(col)] = np.nan  # type: ignore[union-attr]
    return out
