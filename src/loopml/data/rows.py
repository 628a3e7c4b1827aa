"""A dataset's rows as one compact, reproducible ``.npz`` file: what the store keeps once per content.

The file is a zip (deflate) of two NumPy arrays, ``x.npy`` and ``y.npy``, in
the dtypes a :class:`~loopml.data.Dataset` holds (``x`` float32, ``y`` int64
or float32), little-endian, every NaN the canonical one, so that the same
content always gives the same bytes: :func:`numpy.savez_compressed` stamps
each member with the clock, which would make two writers of one dataset
disagree on the file's sha256. ``numpy.load`` reads it as any ``.npz``.

>>> ds = loopml.data.load("iris")
>>> write_rows("rows.npz", ds)
PosixPath('rows.npz')
>>> x, y = read_rows("rows.npz", ds.fingerprint)    # checked against the fingerprint
>>> x.shape, y.dtype
((150, 4), dtype('int64'))
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..files import atomic_path
from .fingerprint import canonical_bytes, fingerprint_arrays

if TYPE_CHECKING:
    from .dataset import Dataset

__all__ = ["read_rows", "write_rows"]

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: a fixed stamp, so the bytes depend on content only


def write_rows(path: str | os.PathLike[str], ds: "Dataset") -> Path:
    """Write ``ds``'s ``x`` and ``y`` to ``path`` (whole or not at all); returns the path."""
    target = Path(path)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for key, tensor in (("x", ds.x), ("y", ds.y)):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3  # the same header on every platform
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, canonical_bytes(tensor.detach().cpu().numpy()), allow_pickle=False)
    return target


def read_rows(path: str | os.PathLike[str], fingerprint: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``x`` and ``y`` of a rows file (no pickle); with ``fingerprint``, checked against it.

    Raises :class:`~loopml.errors.DataError` when the file is not an archive of
    ``x`` and ``y``, or its content does not have ``fingerprint``.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile) or {"x", "y"} - set(archive.files):
                raise DataError(f"{Path(path).name} should be an .npz with the arrays x and y")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{Path(path).name} does not read as an .npz of the arrays x and y: {exc}") from exc
    if fingerprint is not None:
        got = fingerprint_arrays(x, y)
        if got != fingerprint:
            raise DataError(f"The rows in {Path(path).name} have the fingerprint {got[:12]}..., not {fingerprint[:12]}...")
    return x, y
