"""The one exception tree of loopml.

::

    LoopMLError                 anything loopml raises on purpose
    ├── ArgumentError           a bad argument (also a ValueError): "Argument X should be ..."
    │   └── ArgumentTypeError   an argument of the wrong type (also a TypeError)
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

Bad arguments raise :class:`ArgumentError` (a ``ValueError``) or
:class:`ArgumentTypeError` (a ``TypeError``) with a message worded "Argument X
should be ...", so ``except ValueError`` keeps working. Driver errors (sqlite3,
psycopg, httpx) are translated at the boundary with ``raise StoreError(...) from exc``.

How an error reaches a person is a property of its class, read by both servers
and the CLI (:func:`http_answer`, :func:`exit_status`): ``http_status`` and
``error_code`` give the HTTP answer (``{"error": {"code", "message"}}``),
``exit_code`` the command's exit status (2: what was asked cannot be done as
asked, fix the input; 1: it failed, trying again or repairing the store may
help). Any other exception, a ``TypeError`` from loopml's own code included, is
a bug: HTTP 500 ``internal_error`` with the traceback in the server log only,
and a traceback from the CLI.

=========================  ======  ====  =============================================
class                      status  exit  error_code
=========================  ======  ====  =============================================
``LoopMLError``            400     2     ``bad_request``
``ArgumentError``          400     2     ``bad_request``
``FilterError``            400     2     ``invalid_filter``
``ArtifactPathError``      400     2     ``invalid_artifact_path``
``DataError``              400     2     ``invalid_data``
``ExportError``            422     2     ``export_failed``
``ExplainError``           422     2     ``cannot_explain``
``OverBudget``             422     2     ``over_budget``
``AuthError``              401     2     ``unauthorized``
``NotFound``               404     2     ``not_found``
``Conflict``               409     2     ``conflict``
``ConfigError``            500     2     ``config_error``
``StoreError``             500     1     ``store_error`` (503 ``store_unavailable`` when transient)
``IntegrityError``         500     1     ``integrity_error``
``MigrationRequired``      503     2     ``migration_required``
``RemoteError``            the tracking server's status and code; exit 1
=========================  ======  ====  =============================================
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import ClassVar

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "ArtifactPathError",
    "AuthError",
    "ConfigError",
    "Conflict",
    "DataError",
    "ExplainError",
    "ExportError",
    "FederatedError",
    "FilterError",
    "IntegrityError",
    "LoopMLError",
    "LoopMLWarning",
    "MigrationRequired",
    "NotFound",
    "OverBudget",
    "RemoteError",
    "StoreError",
    "exit_status",
    "http_answer",
    "warn_user",
]


class LoopMLError(Exception):
    """Base class of every error loopml raises on purpose.

    ``http_status``/``error_code`` are what a server answers for it, ``exit_code``
    what a command exits with; subclasses set them (see the table above).
    """

    http_status: int = 400
    error_code: str = "bad_request"
    exit_code: int = 2
    #: extra response headers (e.g. WWW-Authenticate for AuthError)
    http_headers: ClassVar[tuple[tuple[str, str], ...]] = ()


class ArgumentError(LoopMLError, ValueError):
    """An argument has a value loopml cannot use: "Argument X should be ..., got ..."."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument has a type loopml cannot use: "Argument X should be a ..., got ..."."""


class ConfigError(LoopMLError):
    """A configuration value (environment variable, option) is not usable."""

    http_status = 500  # the server's own configuration: nothing a client can change
    error_code = "config_error"


class StoreError(LoopMLError):
    """The store could not carry out the operation.

    ``transient`` is True when trying again later may work (a database locked
    by another process, a lost connection, a tracking server that is down);
    the background writer retries those and keeps their points.
    """

    http_status = 500
    error_code = "store_error"
    exit_code = 1

    def __init__(self, message: str, *, transient: bool = False) -> None:
        self.transient = transient
        if transient:  # 503 tells a client to try again; 500 that trying again will not help
            self.http_status, self.error_code = 503, "store_unavailable"
        super().__init__(message)


class MigrationRequired(StoreError):
    """The database schema is older than this version of loopml."""

    http_status = 503
    error_code = "migration_required"
    exit_code = 2  # run `loopml db upgrade`


class NotFound(StoreError):
    """The requested experiment, run, artifact or key does not exist."""

    http_status = 404
    error_code = "not_found"
    exit_code = 2


class Conflict(StoreError):
    """The change would break something stored, e.g. deleting a version that an alias points at."""

    http_status = 409
    error_code = "conflict"
    exit_code = 2


class IntegrityError(StoreError):
    """A stored file (a model version's weights, an export) no longer matches its recorded sha256."""

    error_code = "integrity_error"


class FilterError(LoopMLError, ValueError):
    """A filter or order_by expression does not parse.

    ``position`` is the 0-based offset of the offending token in ``text``.
    """

    error_code = "invalid_filter"

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

    error_code = "invalid_data"

    def __init__(self, message: str, *, report: object | None = None) -> None:
        self.report = report
        super().__init__(message)


class ArtifactPathError(LoopMLError, ValueError):
    """An artifact path is absolute, contains ``..`` or leaves the artifact root."""

    error_code = "invalid_artifact_path"


class ExportError(LoopMLError):
    """A model could not be exported to, or loaded from, a file format (ONNX, .pt2, .pte).

    Also raised when an exported model's outputs differ from eager PyTorch by
    more than the tolerance (``loopml.models.exporting.verify``); ``max_abs_diff``
    is then the difference seen.
    """

    http_status = 422  # the request was understood; this model cannot be exported that way
    error_code = "export_failed"

    def __init__(self, message: str, *, max_abs_diff: float | None = None) -> None:
        self.max_abs_diff = max_abs_diff
        super().__init__(message)


class ExplainError(LoopMLError):
    """A model or version cannot be explained as asked (:mod:`loopml.explanations`).

    A version stored only as ONNX or ExecuTorch asked for a gradient method (those
    formats give no gradients), DeepLIFT on a program without its layers, a target
    the model does not have.
    """

    http_status = 422  # the request was understood; this model cannot answer it that way
    error_code = "cannot_explain"


class OverBudget(ExplainError):
    """An explanation would cost more than the budget allows (evaluations x rows x input size).

    ``cost`` and ``budget`` are the two numbers; the message names both and how to fit.
    """

    error_code = "over_budget"

    def __init__(self, message: str, *, cost: int, budget: int) -> None:
        self.cost, self.budget = cost, budget
        super().__init__(message)


class FederatedError(LoopMLError):
    """A federation could not run as asked (:mod:`loopml.federated`).

    Too few clients answered a round, every round failed, the deployment engine's
    SuperLink or SuperNodes did not start or ran past the time limit. The message
    names what happened and the log lines that say why.
    """

    error_code = "federated_failed"


class AuthError(LoopMLError):
    """The tracking server needs a (different) bearer token."""

    http_status = 401
    error_code = "unauthorized"
    http_headers = (("WWW-Authenticate", "Bearer"),)


class RemoteError(LoopMLError):
    """A tracking server answered with an error; ``code`` is its error code."""

    exit_code = 1

    def __init__(self, message: str, *, code: str = "error", status: int = 500) -> None:
        self.code = code
        self.status = status
        self.http_status, self.error_code = status, code
        super().__init__(message)


def http_answer(exc: BaseException) -> tuple[int, str, str]:
    """``(status, error_code, message)`` for answering ``exc`` over HTTP.

    A :class:`LoopMLError` answers with its class's ``http_status`` and
    ``error_code``; anything else is a bug in loopml or a library: 500
    ``internal_error``, naming only the exception's class (the traceback belongs
    in the server's log, not in a client's hands).

    >>> http_answer(NotFound("Run 'abc' does not exist"))
    (404, 'not_found', "Run 'abc' does not exist")
    >>> http_answer(TypeError("unsupported operand"))[:2]
    (500, 'internal_error')
    """
    if isinstance(exc, LoopMLError):
        return exc.http_status, exc.error_code, str(exc) or type(exc).__name__
    return 500, "internal_error", f"Internal server error ({type(exc).__name__}); the server log has the details"


def exit_status(exc: BaseException) -> int | None:
    """The CLI's exit status for ``exc``, or None for a bug (the CLI then shows its traceback).

    >>> exit_status(ArgumentError("Argument --last should be an int >= 1; got 0"))
    2
    >>> exit_status(KeyError("x")) is None
    True
    """
    return exc.exit_code if isinstance(exc, LoopMLError) else None


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
