"""Lazy public names for a package's ``__init__``: import the module that defines a name on first use.

Each package re-exports its public API without importing torch, SQLAlchemy or
ONNX Runtime at ``import loopml``: a table maps every public name to the module
that defines it, and the package's module-level ``__getattr__`` (PEP 562)
imports that module the first time the name is read, then caches the value::

    _LAZY = {"TrackingStore": "loopml.store.tracking"}
    __all__ = sorted(_LAZY)
    __getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    table: Mapping[str, str],
    names: Sequence[str],
    *,
    submodules: Sequence[str] = (),
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``table`` maps a name to its module.

    ``submodules``: names that are the package's own submodules, imported as such.

    >>> getattr_, dir_ = lazy_exports("loopml.store", {"TrackingStore": "loopml.store.tracking"}, ["TrackingStore"])
    >>> getattr_("TrackingStore").__name__
    'TrackingStore'
    >>> dir_()
    ['TrackingStore']
    """
    public = list(names)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return import_module(f"{package}.{name}")
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        setattr(sys.modules[package], name, value)  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__
