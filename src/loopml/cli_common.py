"""What every ``loopml`` command module shares: the ``--store`` option and the one-line error handling.

It lives apart from :mod:`loopml.cli` so that the command modules
(:mod:`loopml.cli_models`, :mod:`loopml.cli_monitor`) can import it
without importing the app that mounts them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import wraps
from typing import Any, Callable, TypeVar

import typer

from .errors import LoopMLError, exit_status

__all__ = ["StoreOpt", "console", "fail", "fmt_time", "friendly"]

F = TypeVar("F", bound=Callable[..., Any])

StoreOpt = typer.Option(None, "--store", help="Tracking URI (default: LOOPML_TRACKING_URI or ./.loopml).")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly(fn: F) -> F:
    """Turn loopml errors into one line on stderr and the exit code their class names.

    ``LoopMLError`` subclasses carry ``exit_code`` (2: fix the input; 1: the operation
    failed; see loopml.errors). Any other exception, a ``TypeError`` from loopml's own
    code included, is a bug and keeps its traceback.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LoopMLError as exc:
            fail(str(exc).strip().replace("\n", " | ") if "\n  " not in str(exc) else str(exc), exit_status(exc) or 2)
        except ModuleNotFoundError as exc:
            if "pip install" not in str(exc):
                raise  # not a missing extra loopml names: a real bug, keep its traceback
            fail(str(exc))  # a missing extra: one line naming the install command

    return wrapper  # type: ignore[return-value]


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def console() -> Any:
    from rich.console import Console

    con = Console()
    # piped output (scripts, CI logs) gets wide lines instead of 80-column wrapping
    return con if con.is_terminal else Console(width=200)
