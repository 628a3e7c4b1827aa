"""The one exception tree of loopml.

::

    LoopMLError                 anything loopml raises on purpose
    ├── ConfigError             a bad LOOPML_HOME / LOOPML_TRACKING_URI / option
    ├── StoreError              the store could not do what was asked
    │   ├── MigrationRequired   the database is older than this loopml: run `loopml db upgrade`
    │   ├── NotFound            no such experiment, run, artifact, model, version, ...
    │   ├── Conflict            the change would break something stored (a version an alias points at)
    │   └── IntegrityError      a stored file no longer matches its recorded sha256
    ├── FilterError             a run filter or order_by that does not parse
    ├── DataError               a dataset failed its quality checks (loopml.data.check)
    ├── ArtifactPathError       an artifact path that would escape the artifact root
    ├── ExportError             a model did not export, load or match eager PyTorch (loopml.models.exporting)
    ├── AuthError               a tracking server refused the token
    └── RemoteError             a tracking server answered with an error

    LoopMLWarning (UserWarning) something was left out or changed to let a call succeed
                                (a format that cannot rebuild the model, a gate fitted at a looser rate)

Bad arguments raise the built-in ``ValueError``/``TypeError`` with a message
worded "Argument X should be ...". Driver errors (sqlite3, psycopg, httpx) are
translated at the boundary with ``raise StoreError(...) from exc``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

__all__ = [
    "ArtifactPathError",
    "AuthError",
    "ConfigError",
    "Conflict",
    "DataError",
    "ExportError",
    "FilterError",
    "IntegrityError",
    "LoopMLError",
    "LoopMLWarning",
    "MigrationRequired",
    "NotFound",
    "RemoteError",
    "StoreError",
    "warn_user",
]


class LoopMLError(Exception):
    """Base class of every error loopml raises on purpose."""


class ConfigError(LoopMLError):
    """A configuration value (environment variable, option) is not usable."""


class StoreError(LoopMLError):
    """The store could not carry out the operation.

    ``transient`` is True when trying again later may work (a database locked
    by another process, a lost connection, a tracking server that is down);
    the background writer retries those and keeps their points.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        super().__init__(message)


class MigrationRequired(StoreError):
    """The database schema is older than this version of loopml."""


class NotFound(StoreError):
    """The requested experiment, run, artifact or key does not exist."""


class Conflict(StoreError):
    """The change would break something stored, e.g. deleting a version that an alias points at."""


class IntegrityError(StoreError):
    """A stored file (a model version's weights, an export) no longer matches its recorded sha256."""


class FilterError(LoopMLError, ValueError):
    """A filter or order_by expression does not parse.

    ``position`` is the 0-based offset of the offending token in ``text``.
    """

    def __init__(self, message: str, *, text: str = "", position: int | None = None) -> None:
        self.text = text
        self.position = position
        if position is not None and text:
            message = f"{message}\n  {text}\n  {' ' * position}^"
        super().__init__(message)


class DataError(LoopMLError, ValueError):
    """A dataset has errors (missing values, conflicting labels, leakage, ...).

    ``report`` is the :class:`loopml.data.CheckReport` that found them, when there is one.
    """

    def __init__(self, message: str, *, report: object | None = None) -> None:
        self.report = report
        super().__init__(message)


class ArtifactPathError(LoopMLError, ValueError):
    """An artifact path is absolute, contains ``..`` or leaves the artifact root."""


class ExportError(LoopMLError):
    """A model could not be exported to, or loaded from, a file format (ONNX, .pt2, .pte).

    Also raised when an exported model's outputs differ from eager PyTorch by
    more than the tolerance (``loopml.models.exporting.verify``); ``max_abs_diff``
    is then the difference seen.
    """

    def __init__(self, message: str, *, max_abs_diff: float | None = None) -> None:
        self.max_abs_diff = max_abs_diff
        super().__init__(message)


class AuthError(LoopMLError):
    """The tracking server needs a (different) bearer token."""


class RemoteError(LoopMLError):
    """A tracking server answered with an error; ``code`` is its error code."""

    def __init__(self, message: str, *, code: str = "error", status: int = 500) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class LoopMLWarning(UserWarning):
    """loopml did what was asked with something left out or adjusted, and says what and how to avoid it.

    For example ``register`` of an ``nn.Sequential`` leaves out the ``torch`` format
    (nothing can rebuild the class from a state dict) and keeps ``pt2``. Filter it
    like any warning: ``warnings.filterwarnings("error", category=LoopMLWarning)``.
    """


_PACKAGE = Path(__file__).resolve().parent.as_posix() + "/"


def warn_user(message: str) -> None:
    """Issue a :class:`LoopMLWarning` attributed to the first caller outside loopml.

    The warning then names the user's line (``train.py:42: LoopMLWarning: ...``),
    however deep in loopml it was raised (Python 3.12's ``skip_file_prefixes``, by hand).
    Example::

        warn_user("register('m'): the 'torch' format was left out: ...")
    """
    frame = sys._getframe(1)
    level = 2  # stacklevel 2 is this function's caller
    while frame.f_back is not None and Path(frame.f_code.co_filename).resolve().as_posix().startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, LoopMLWarning, stacklevel=level)
