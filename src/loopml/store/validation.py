"""Checks on names and values before anything is stored.

Shared by the client (so that a bad key fails at the ``log`` call, not later
in the background writer) and the store and server (so that no client can
slip past them). Messages name the argument, the value and what would work.
"""

from __future__ import annotations

import numbers
import re
from typing import Any
from ..errors import ArgumentError, ArgumentTypeError


__all__ = ["MAX_VALUE_LENGTH", "RUN_STATUSES", "check_key", "check_metric_value", "check_status", "check_step", "check_text_value"]

RUN_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")

MAX_VALUE_LENGTH = 65_536
KEY_LENGTH = 250  # the width of the store's key columns (schema.py uses it)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_key(key: Any, *, what: str = "key") -> str:
    """Return ``key`` if it is a usable name for a param, tag or metric."""
    if not isinstance(key, str):
        raise ArgumentTypeError(f"Argument {what} should be a string, got {type(key).__name__}: {key!r}")
    if not key:
        raise ArgumentError(f"Argument {what} should be a non-empty string, got ''")
    if len(key) > KEY_LENGTH:
        raise ArgumentError(
            f"Argument {what} should be at most {KEY_LENGTH} characters, got {len(key)}: {key[:40]!r}..."
        )
    if _CONTROL.search(key):
        raise ArgumentError(f"Argument {what} should not contain control characters, got {key!r}")
    if ".." in key:
        raise ArgumentError(f"Argument {what} should not contain '..', got {key!r}")
    if key.startswith("/") or key != key.strip():
        raise ArgumentError(
            f"Argument {what} should not start with '/' or with or end in whitespace, got {key!r}"
        )
    return key


def check_metric_value(key: str, value: Any) -> float:
    """Return ``value`` as a float64, or raise naming the metric."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise ArgumentError(f"Metric {key!r} should have a numeric value, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)  # NumPy and torch scalars, 0-d arrays and tensors
    if item is not None:
        try:
            return check_metric_value(key, item())
        except (ValueError, RuntimeError, TypeError):
            pass
    raise ArgumentError(f"Metric {key!r} should have a numeric value, got {type(value).__name__}: {value!r:.80}")


def check_step(step: Any) -> int:
    if type(step) is int or (isinstance(step, numbers.Integral) and not isinstance(step, bool)):
        as_int = int(step)
        if -(2**63) <= as_int < 2**63:
            return as_int
    raise ArgumentError(f"Argument step should be an integer (int64), got {type(step).__name__}: {step!r}")


def check_text_value(key: str, value: Any, *, what: str = "param") -> str:
    """Params and tags are stored as strings; anything else is converted with ``str``."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_VALUE_LENGTH:
        raise ArgumentError(
            f"The {what} {key!r} should have a value of at most {MAX_VALUE_LENGTH} characters, got {len(text)}"
        )
    if "\x00" in text:
        raise ArgumentError(f"The {what} {key!r} should not contain NUL characters")
    return text


def check_status(status: Any) -> str:
    """A run status: one of :data:`RUN_STATUSES` (checked alike by the store and by a client of a server)."""
    if status not in RUN_STATUSES:
        raise ArgumentError(f"Argument status should be one of {', '.join(RUN_STATUSES)}, got {status!r}")
    return str(status)
