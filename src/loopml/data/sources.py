"""Where rows come from when a call needs data: a Dataset, arrays, a file, a stored dataset, or a bundled set.

:func:`resolve` turns what a user passed (to :func:`loopml.models.quantize`,
:func:`loopml.monitor.fit_ood`, ``loopml quantize --data``, ...) into a
:class:`~loopml.data.Dataset` or :class:`~loopml.data.Split`:

================================  =====================================================================
``data``                          what it is
================================  =====================================================================
a ``Dataset`` or ``Split``        used as it is
``(x, y)``                        arrays or tensors (:func:`loopml.data.from_arrays`)
``"train.npz"``                   a NumPy archive with the arrays ``x`` and ``y``
``"table.csv"``, ``".parquet"``   a table; ``target`` names the label column (:func:`~loopml.data.from_frame`)
a 64-hex fingerprint              a dataset logged with a run whose rows the store keeps (:func:`stored`)
``"digits"``, ``"iris"``, ...     a bundled scikit-learn set (:func:`loopml.data.load`), only when named
================================  =====================================================================

Nothing is ever assumed: with no data the caller decides what to do (the
registry looks for the datasets logged with the version's run, then says what
to pass).

:func:`log_dataset <loopml.data.log_dataset>` keeps a dataset's rows by
content (``_datasets/<fingerprint>.npz`` under the artifact root, once
however many runs use them) when they take at most :data:`KEEP_ROWS_BYTES`;
:func:`stored` reads them back, checked against the fingerprint.

>>> ds = resolve((np.zeros((4, 3)), [0, 1, 0, 1]))
>>> ds.x.shape
torch.Size([4, 3])
>>> import pandas as pd
>>> pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.1, 0.2], "label": ["x", "y", "x"]}).to_csv("table.csv", index=False)
>>> resolve("table.csv", target="label")
<Dataset 'table' tabular (3, 2) classification, 2 classes>
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import (
    ArgumentError,
    ArgumentTypeError,
    DataError,
    IntegrityError,
    NotFound,
)
from ..tracking.api import backend_for
from .dataset import Dataset, from_arrays, from_frame
from .loaders import NAMES, load
from .rows import load_stored, rebuild
from .split import Split

if TYPE_CHECKING:
    import pandas as pd

    from ..store.protocols import TrackingBackend
    from ..tracking.run import Run

__all__ = ["FILE_SUFFIXES", "KEEP_ROWS_BYTES", "read_file", "read_table", "resolve", "rows_artifact", "save_rows", "stored"]

FILE_SUFFIXES = (".npz", ".csv", ".parquet")
KEEP_ROWS_BYTES = 32 * 2**20
"""Datasets up to this size (x and y) logged with a run keep their rows in the store (32 MiB: digits is 0.4 MB)."""

FORMS = (
    "a loopml Dataset or Split, arrays (x, y), a file (train.npz with arrays x and y, or table.csv / "
    "table.parquet with target='label'), a stored dataset's fingerprint, or a bundled set by name "
    f"({', '.join(NAMES)})"
)
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def _frame_reader(suffix: str) -> Any:
    """pandas' reader of a ``.csv`` or ``.parquet`` table (parquet: an error naming the extra without pyarrow)."""
    import pandas as pd

    if suffix == ".csv":
        return pd.read_csv
    try:
        import pyarrow  # noqa: F401  # pandas reads parquet through pyarrow
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("Reading .parquet files needs pyarrow: pip install 'loopml[parquet]'") from exc
    return pd.read_parquet


def read_table(path: str | os.PathLike[str], *, what: str = "data") -> "pd.DataFrame":
    """A ``.csv`` or ``.parquet`` file as a DataFrame; ``what`` names the argument in the errors (a wrong
    suffix, a missing file, or the parser's own error, with the file's name: the file is at fault, not loopml)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ArgumentError(f"Argument {what} should be a .csv or .parquet file, got {str(p)!r}")
    if not p.is_file():
        raise ArgumentError(f"Argument {what} should be an existing file; {str(p)!r} does not exist")
    try:
        return _frame_reader(suffix)(p)
    except ModuleNotFoundError:
        raise
    except Exception as exc:  # pandas raises many parser errors; the user's file is at fault, say which
        raise ArgumentError(f"Argument {what} should be a readable {suffix} table; {str(p)!r}: {type(exc).__name__}: {exc}") from exc


def read_file(path: str | os.PathLike[str], *, target: str | None = None) -> Dataset:
    """A Dataset from ``.npz`` (arrays ``x`` and ``y``), ``.csv`` or ``.parquet`` (``target``: the label column).

    >>> np.savez("train.npz", x=np.zeros((4, 3), dtype=np.float32), y=np.array([0, 1, 0, 1]))
    >>> read_file("train.npz")
    <Dataset 'train' tabular (4, 3) classification, 2 classes>
    >>> import pandas as pd
    >>> pd.DataFrame({"petal": [1.4, 4.7], "species": ["setosa", "versicolor"]}).to_csv("table.csv", index=False)
    >>> read_file("table.csv", target="species").class_names
    ['setosa', 'versicolor']
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ArgumentError(f"Argument data should be a .npz, .csv or .parquet file, got {str(p)!r}; or pass {FORMS}")
    if not p.is_file():
        raise ArgumentError(f"Argument data should be an existing file; {str(p)!r} does not exist")
    name = p.stem or "data"
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as exc:
            raise ArgumentError(f"Argument data should be a NumPy .npz archive; {str(p)!r} does not read as one: {exc}") from exc
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise ArgumentError(
                f"Argument data should be an .npz with the arrays 'x' (inputs) and 'y' (labels); {str(p)!r} "
                f"has {sorted(arrays)}, without {missing}; write one with numpy.savez(path, x=x, y=y)"
            )
        return from_arrays(arrays["x"], arrays["y"], name=name, source=f"file:{p.name}")
    frame = read_table(p)
    columns = [str(c) for c in frame.columns]
    if target is None:
        raise ArgumentError(
            f"Argument target should name the label column of {p.name} (columns: {', '.join(columns[:20])}); "
            f"e.g. --target {columns[-1] if columns else 'label'}"
        )
    if target not in frame.columns:
        raise ArgumentError(f"Argument target should be a column of {p.name}, got {target!r}; columns: {', '.join(columns[:20])}")
    ds = from_frame(frame, target=target, name=name)
    ds.source = f"file:{p.name}"
    return ds


def resolve(data: Any, *, target: str | None = None, tracking_uri: str | None = None, backend: "TrackingBackend | None" = None) -> Dataset | Split:
    """``data`` in any of the forms of the module docstring, as a Dataset (or the Split it already is).

    ``target``: the label column of a ``.csv`` / ``.parquet`` file. ``backend`` or
    ``tracking_uri``: the store a fingerprint is looked up in (default: the current one).

    >>> resolve("digits").x.shape
    torch.Size([1797, 1, 8, 8])
    """
    if isinstance(data, (Dataset, Split)):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return from_arrays(data[0], data[1], name="arrays")
    if isinstance(data, os.PathLike):
        return read_file(data, target=target)
    if not isinstance(data, str):
        raise ArgumentTypeError(f"Argument data should be {FORMS}; got {type(data).__name__}")
    if Path(data).suffix.lower() in FILE_SUFFIXES:
        return read_file(data, target=target)
    if data in NAMES:
        return load(data)
    if _FINGERPRINT.match(data):
        if backend is None:
            backend = backend_for(tracking_uri)
        return stored(backend, data)
    if re.fullmatch(r"[0-9a-f]{8,63}", data):
        raise ArgumentError(f"Argument data should be a whole fingerprint (64 hex digits), got {len(data)}: {data!r}; "
                         "`loopml models show NAME/VERSION --json` lists a version's datasets in full")
    if Path(data).exists():
        raise ArgumentError(f"Argument data should be a .npz, .csv or .parquet file, got {data!r}")
    raise ArgumentError(f"Argument data should be {FORMS}; got {data!r}")


def rows_artifact(fingerprint: str) -> str:
    """The run artifact where loopml before 0006 kept a dataset's rows: ``datasets/<fingerprint>.npz``."""
    return f"datasets/{fingerprint}.npz"


def save_rows(run: "Run", ds: Dataset) -> str:
    """Keep ``ds``'s rows with ``run`` the way loopml did before 0006 (see :func:`rows_artifact`): stores that
    hold such artifacts are still read; new rows are stored by content (:func:`loopml.data.store_dataset`)."""
    name = rows_artifact(ds.fingerprint)
    with tempfile.TemporaryDirectory(prefix="loopml-rows-") as tmp:
        path = Path(tmp) / "rows.npz"
        np.savez(path, x=ds.x.numpy(), y=ds.y.numpy())
        run.log_artifact(path, name=name)
    return name


def _runs_linked(backend: "TrackingBackend", fingerprint: str) -> list[str]:
    ids: list[str] = []
    for role in ("train", "val", "test", "eval"):
        # the fingerprint is 64 hex digits (checked by the caller), so it is safe inside the filter's quotes
        for run in backend.search_runs(filter=f"tags.`dataset.{role}` = '{fingerprint}'", limit=20):
            if run.id not in ids:
                ids.append(run.id)
    return ids


def stored(backend: "TrackingBackend", fingerprint: str, *, run_ids: list[str] | None = None) -> Dataset:
    """The dataset ``fingerprint`` rebuilt from its stored rows, checked against the fingerprint.

    The rows stored by content (``_datasets/<fingerprint>.npz``, :func:`loopml.data.store_dataset`)
    are read first; stores written by earlier loopml kept them as a run's artifact
    ``datasets/<fingerprint>.npz``, looked for next (``run_ids``: where to look first).

    Raises :class:`~loopml.errors.NotFound` when the store has no such dataset,
    :class:`~loopml.errors.DataError` when it has the record (schema, profile)
    but not its rows, :class:`~loopml.errors.IntegrityError` when the rows no
    longer match the fingerprint (or the stored file its sha256).

    >>> from loopml.tracking.api import backend_for
    >>> stored(backend_for(None), "701273ed113105829dae267939703c6b49303ef68aaf384f73ed6dc3c1fb7704")  # a logged train split
    <Dataset ...>
    """
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise ArgumentError(f"Argument fingerprint should be 64 lowercase hex digits (a sha256), got {fingerprint!r}")
    try:
        record = backend.get_dataset(fingerprint)
    except NotFound as exc:
        raise NotFound(f"No dataset {fingerprint[:12]}... is stored; pass the data itself ({FORMS})") from exc
    if record.get("stored_path") is not None:
        return load_stored(backend, record)
    # stores written before the rows were kept by content: a run's artifact
    candidates = list(run_ids or [])
    candidates += [r for r in _runs_linked(backend, fingerprint) if r not in candidates]
    name = rows_artifact(fingerprint)
    for run_id in candidates:
        if not any(a.path == name for a in backend.list_artifacts(run_id, "datasets")):
            continue
        with tempfile.TemporaryDirectory(prefix="loopml-rows-") as tmp:
            local = backend.download_artifact(run_id, name, Path(tmp))
            with np.load(local, allow_pickle=False) as archive:
                x, y = archive["x"], archive["y"]
        ds = rebuild(record, x, y)
        if ds.fingerprint != fingerprint:
            raise IntegrityError(f"The rows of dataset {fingerprint[:12]}... kept by run {run_id} no longer match its fingerprint")
        return ds
    raise DataError(
        f"The store keeps dataset {fingerprint[:12]}... ({record.get('name')}, {record.get('n_rows')} rows) as a record "
        f"(schema and profile) but not its rows (they are kept only when logged at most {KEEP_ROWS_BYTES // 2**20} MiB "
        f"and keep_rows is not False, or stored with loopml.data.store_dataset); pass the data itself ({FORMS})"
    )
