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
    from .dataset import Dataset

__all__ = ["FINGERPRINT_VERSION", "canonical_bytes", "fingerprint"]

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


def fingerprint(ds: "Dataset") -> str:
    """The sha256 hex digest of ``ds``'s inputs and labels (see the module docstring)."""
    from .dataset import Dataset

    if not isinstance(ds, Dataset):
        raise TypeError(
            f"Argument ds should be a loopml.data.Dataset, got {type(ds).__name__}; "
            "make one with loopml.data.from_arrays(x, y)"
        )
    h = hashlib.sha256(b"loopml-dataset-v1\n")
    for tag, t in (("x", ds.x), ("y", ds.y)):
        a = canonical_bytes(t.detach().cpu().numpy())
        h.update(_header(tag, a))
        h.update(a.data.cast("B") if a.size else b"")
    return h.hexdigest()
