"""A dataset's fingerprint: a stable content hash of its inputs and labels.

Definition (version 1)::

    sha256( b"loopml-dataset-v1\n"
            + b"x <dtype> <d0>x<d1>x...\n" + bytes of x, C order
            + b"y <dtype> <n>\n"          + bytes of y, C order )

``x`` is float32 and ``y`` int64 (classification) or float32 (regression),
as :class:`~loopml.data.Dataset` stores them, so the same content gives the
same fingerprint whether it came from NumPy, a tensor or a DataFrame, in any
process, on any run. Bytes are little-endian; every NaN is hashed as the one
canonical quiet NaN (NaN payloads differ between libraries). Row order is
part of the content: a shuffled copy has another fingerprint. Names (feature
names, class names, the dataset's name) are not: renaming a column keeps it.

>>> from loopml.data import load, fingerprint
>>> fingerprint(load("iris"))
'04a46cddcff1bac4b3696be1d79cee714a7d9aeb7c5272b277f87642c6cbaee1'
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# fingerprint(ds), the function on a Dataset, lives in loopml.data.dataset next to the class.
__all__ = ["FINGERPRINT_VERSION", "canonical_bytes", "fingerprint_arrays", "fingerprint_graph", "fingerprint_tensors"]

FINGERPRINT_VERSION = 1


def canonical_bytes(a: np.ndarray) -> np.ndarray:
    """``a`` C-contiguous and little-endian, with every NaN the canonical NaN."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        if nan.any():
            a = a.copy()
            a[nan] = np.nan
    return a


def _header(tag: str, a: np.ndarray) -> bytes:
    return f"{tag} {a.dtype.str.lstrip('<>=|')} {'x'.join(str(d) for d in a.shape)}\n".encode()


def fingerprint_tensors(x: torch.Tensor, y: torch.Tensor) -> str:
    """The sha256 hex digest of inputs ``x`` and labels ``y`` (see the module docstring).

    What :func:`loopml.data.fingerprint` and ``Dataset.fingerprint`` compute; it takes the
    tensors, not the Dataset, so that this module does not import ``dataset`` (which imports
    this one). Example::

        fingerprint_tensors(ds.x, ds.y) == ds.fingerprint  # True
    """
    return fingerprint_arrays(x.detach().cpu().numpy(), y.detach().cpu().numpy())


def fingerprint_arrays(x: np.ndarray, y: np.ndarray) -> str:
    """The same digest from NumPy arrays already in the Dataset's dtypes (stored rows, an upload)."""
    h = hashlib.sha256(b"loopml-dataset-v1\n")
    for tag, arr in (("x", x), ("y", y)):
        a = canonical_bytes(arr)
        h.update(_header(tag, a))
        h.update(a.data.cast("B") if a.size else b"")
    return h.hexdigest()


def fingerprint_graph(x: np.ndarray, edge_index: np.ndarray, y: np.ndarray) -> str:
    """A graph's digest (``Graph.fingerprint``) from its arrays in a Graph's dtypes (float32, int64, int64).

    The same scheme with the tag ``loopml-graph-v1`` and the arrays ``x``, ``edge_index``, ``y``:
    a function of arrays so that a stored graph's file is checked without building the Graph.
    """
    h = hashlib.sha256(b"loopml-graph-v1\n")
    for tag, arr in (("x", x), ("edge_index", edge_index), ("y", y)):
        a = canonical_bytes(arr)
        h.update(_header(tag, a))
        h.update(a.data.cast("B") if a.size else b"")
    return h.hexdigest()
