"""What a model takes and returns: a :class:`Signature`, inferred from an input example.

A signature is stored with every registered model version and checked on every
prediction request, so that a wrong payload gets a message saying what was
expected instead of a shape error from deep inside a runtime. Example::

    import torch
    from loopml.models.signature import infer_signature

    sig = infer_signature(model, torch.randn(8, 64), class_names=[str(d) for d in range(10)])
    sig.input            # TensorSpec(name='x', dtype='float32', shape=(None, 64))
    batch = sig.validate([[0.0] * 64])      # a float32 array of shape (1, 64)

loopml supports models with one tensor input and one tensor output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

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
        raise ValueError(f"Signature field {field!r} should be a numpy dtype name such as 'float32'; got {dtype!r}")
    try:
        kind = np.dtype(dtype).kind
    except TypeError as exc:
        raise ValueError(
            f"Signature field {field!r} should be a numpy dtype name such as 'float32'; got {dtype!r}"
        ) from exc
    if kind not in "biuf" or np.dtype(dtype).name != dtype:
        raise ValueError(
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
            raise ValueError(f"Signature field {field!r} should be an object with name, dtype, shape; got {data!r}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"Signature field '{field}.name' should be a non-empty string; got {name!r}")
        dtype = _check_dtype_name(data.get("dtype"), f"{field}.dtype")
        shape = data.get("shape")
        if not isinstance(shape, (list, tuple)) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in shape
        ):
            raise ValueError(
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

    @property
    def is_classifier(self) -> bool:
        """True when the signature carries class names (one per output column)."""
        return self.class_names is not None

    @property
    def input(self) -> TensorSpec:
        """The single input's spec (loopml supports single-input models)."""
        if len(self.inputs) != 1:
            raise ValueError(f"{_SINGLE_IO}; this signature has {len(self.inputs)} inputs")
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        """The single output's spec."""
        if len(self.outputs) != 1:
            raise ValueError(f"{_SINGLE_IO}; this signature has {len(self.outputs)} outputs")
        return self.outputs[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, read back by :meth:`from_dict`."""
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "class_names": None if self.class_names is None else list(self.class_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Read a signature written by :meth:`to_dict`.

        Raises ``ValueError`` naming the bad field, e.g. ``'inputs[0].shape'``.
        Example::

            Signature.from_dict(json.loads(text))
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"A signature should be an object with inputs and outputs; got {type(data).__name__}")
        specs: dict[str, tuple[TensorSpec, ...]] = {}
        for key in ("inputs", "outputs"):
            items = data.get(key)
            if not isinstance(items, (list, tuple)) or not items:
                raise ValueError(f"Signature field {key!r} should be a non-empty list of tensor specs; got {items!r}")
            specs[key] = tuple(TensorSpec.from_dict(item, field=f"{key}[{i}]") for i, item in enumerate(items))
        names = data.get("class_names")
        if names is not None:
            if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"Signature field 'class_names' should be a list of strings or null; got {names!r}")
            names = tuple(names)
            width = specs["outputs"][0].shape[-1] if specs["outputs"][0].shape else None
            if width is not None and len(names) != width:
                raise ValueError(
                    f"Signature field 'class_names' should have one name per output column ({width}); got {len(names)}"
                )
        unknown = set(data) - {"inputs", "outputs", "class_names"}
        if unknown:
            raise ValueError(f"Signature has unknown fields {sorted(unknown)}; expected inputs, outputs, class_names")
        return cls(inputs=specs["inputs"], outputs=specs["outputs"], class_names=names)

    def validate(self, array: Any) -> np.ndarray:
        """Check a batch for the single input and return it as an array of the input's dtype.

        Accepts a numpy array or nested lists; a single row without the batch
        dimension comes back with a batch dimension of 1. Integers are cast to
        float for a float input. Raises ``ValueError`` for a wrong rank, shape or
        dtype, NaN or infinity, ragged lists and an empty batch. Example::

            sig.validate([[1, 2, 3, 4]])      # float32 array of shape (1, 4)
        """
        spec = self.input
        want = np.dtype(spec.dtype)
        if isinstance(array, np.ndarray):
            arr = array
        else:
            try:
                arr = np.asarray(array)
            except ValueError as exc:  # numpy >= 1.24 refuses ragged nested lists
                raise ValueError(
                    f"input {spec.name!r} should be a rectangular array of shape {_shape_text(spec.shape)}; "
                    "got ragged nested lists (rows of different lengths)"
                ) from exc
        kind = arr.dtype.kind
        if kind == "O":
            raise ValueError(
                f"input {spec.name!r} should be numbers of dtype {spec.dtype} in shape {_shape_text(spec.shape)}; "
                "got ragged nested lists or non-numeric values"
            )
        allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}.get(want.kind, want.kind)
        if kind not in allowed:
            raise ValueError(
                f"input {spec.name!r} should have dtype {spec.dtype}; got {_dtype_text(arr.dtype)}"
            )
        rank = len(spec.shape)
        if arr.ndim == rank - 1 and rank > 1:
            arr = arr[np.newaxis, ...]
        if arr.ndim != rank or any(d is not None and d != n for d, n in zip(spec.shape, arr.shape)):
            raise ValueError(
                f"input {spec.name!r} should have shape {_shape_text(spec.shape)}; got {tuple(arr.shape)}"
            )
        if arr.shape[0] == 0:
            raise ValueError(f"input {spec.name!r} should have at least one row; got an empty batch {tuple(arr.shape)}")
        if kind == "f" and not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "infinity"
            raise ValueError(f"input {spec.name!r} should hold finite numbers; got {bad}")
        if kind in "iu" and want.kind in "iu" and arr.size:
            info = np.iinfo(want)
            if arr.min() < info.min or arr.max() > info.max:
                raise ValueError(f"input {spec.name!r} has values outside the range of {spec.dtype}")
        return np.ascontiguousarray(arr, dtype=want)


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
) -> Signature:
    """Run ``model`` once on ``input_example`` (with a batch dimension) and record its signature.

    The model runs in eval mode under ``torch.no_grad`` (its mode is restored
    afterwards). The batch dimension is recorded as ``None``. ``class_names`` must
    have one name per output column. Example::

        sig = infer_signature(model, torch.randn(8, 1, 8, 8), class_names=[str(d) for d in range(10)])
        sig.to_dict()["inputs"]   # [{'name': 'x', 'dtype': 'float32', 'shape': [None, 1, 8, 8]}]
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Argument model should be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(input_example, np.ndarray):
        input_example = torch.from_numpy(np.ascontiguousarray(input_example))
    if not isinstance(input_example, torch.Tensor):
        raise ValueError(
            f"Argument input_example should be one torch.Tensor or numpy array; got {type(input_example).__name__}. "
            + _SINGLE_IO
        )
    if input_example.ndim < 1 or input_example.shape[0] < 1:
        raise ValueError(
            "Argument input_example should have a batch dimension with at least one row; "
            f"got shape {tuple(input_example.shape)}"
        )
    with eval_mode(model), torch.no_grad():
        output = model(input_example)
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"The model returned {type(output).__name__}, not a tensor. " + _SINGLE_IO)
    if output.ndim < 1 or output.shape[0] != input_example.shape[0]:
        raise ValueError(
            f"The model's output should have the batch dimension first ({input_example.shape[0]} rows); "
            f"got shape {tuple(output.shape)}"
        )
    inputs = (TensorSpec(input_name, _numpy_dtype_name(input_example.dtype), (None, *input_example.shape[1:])),)
    outputs = (TensorSpec(output_name, _numpy_dtype_name(output.dtype), (None, *output.shape[1:])),)
    names: tuple[str, ...] | None = None
    if class_names is not None:
        if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
            raise ValueError(f"Argument class_names should be a list of strings; got {class_names!r}")
        names = tuple(class_names)
        if output.ndim != 2 or output.shape[1] != len(names):
            raise ValueError(
                f"Argument class_names should have one name per output column; the model returns shape "
                f"{_shape_text(outputs[0].shape)} and {len(names)} names were given"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"Argument class_names should have no duplicates; got {list(names)}")
    return Signature(inputs=inputs, outputs=outputs, class_names=names)


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
        raise ValueError(f"Argument n should be an int >= 1; got {n!r}")
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
            raise ValueError(
                f"Argument like should be given: dimension {i} of input {spec.name!r} has no fixed size"
            )
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    lo, hi = (float(ref.min()), float(ref.max())) if ref is not None and ref.size else (None, None)
    if dtype.kind in "iu":
        low, high = (int(lo), int(hi) + 1) if lo is not None and hi is not None else (0, 10)
        return rng.integers(low, high, size=shape).astype(dtype)
    if lo is None or hi is None:
        return rng.standard_normal(size=shape).astype(dtype)
    return rng.uniform(lo, hi, size=shape).astype(dtype)
