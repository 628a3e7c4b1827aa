"""How the ``torch`` format rebuilds a module: its class path and its constructor arguments.

A version's ``torch`` format is a ``state_dict`` plus ``{"class_path", "init_args"}``;
loading it calls ``Class(**init_args)`` and loads the weights. The arguments come
from ``register(..., init_args=...)``, or are recorded by the class itself when it is
decorated with :func:`keep_init_args` (loopml's own networks are)::

    from torch import nn
    from loopml.models import keep_init_args

    @keep_init_args
    class Net(nn.Module):
        def __init__(self, n_in: int, n_out: int, hidden: int = 32) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

        def forward(self, x):
            return self.body(x)

    init_args_of(Net(30, 2))        # {'n_in': 30, 'n_out': 2}

:func:`model_spec` decides, at registration, whether a module can be rebuilt that
way: a module that cannot (an ``nn.Sequential`` built in code, a class defined in
``__main__``, required constructor arguments nobody recorded) is still registered
in the formats that need no code, and the reason is returned for a warning.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ArgumentError, ArgumentTypeError
from .runtime import class_path_of, import_class

if TYPE_CHECKING:
    import torch

__all__ = ["init_args_of", "keep_init_args", "model_spec"]

T = TypeVar("T", bound=type)
_ATTR = "_loopml_init_args"  # set on the instance by keep_init_args: (class, JSON copy of the arguments | None, problem | None)


def keep_init_args(cls: T) -> T:
    """Class decorator: each instance records the arguments its constructor was called with.

    ``register`` then stores them as the version's ``init_args``, so the ``torch``
    format rebuilds the class without ``init_args=``. Arguments are recorded by
    name (positional ones too) as a JSON copy taken before ``__init__`` runs;
    defaults that were not passed are left to the class. A subclass records its own
    arguments only when it is decorated too. Example::

        @keep_init_args
        class Net(nn.Module):
            def __init__(self, n_in: int, hidden: int = 64) -> None: ...

        loopml.register(Net(30, hidden=16), "tabular", input_example=x[:8])   # keeps the torch format
    """
    if not isinstance(cls, type):
        raise ArgumentTypeError(f"keep_init_args decorates a class (@keep_init_args above `class Net(nn.Module):`); got {cls!r}")
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(init)
    params = list(signature.parameters.values())[1:]  # without self
    bad = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)]
    if bad:
        raise ArgumentTypeError(
            f"keep_init_args needs a constructor whose arguments can be passed by name (Class(**init_args)); "
            f"{cls.__qualname__}.__init__ takes {', '.join(bad)} positionally only"
        )
    var_keyword = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        recorded: Any = None
        if type(self) is cls:  # a subclass's own arguments are not these
            bound = signature.bind(self, *args, **kwargs)
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(signature.parameters)))
            if var_keyword is not None:
                arguments.update(arguments.pop(var_keyword, {}))
            recorded = _json_copy(arguments)
        init(self, *args, **kwargs)
        if recorded is not None:
            # plain attribute (not a parameter, buffer or submodule): nn.Module keeps it in __dict__
            object.__setattr__(self, _ATTR, (cls, *recorded))

    cls.__init__ = __init__  # type: ignore[misc]
    return cls


def _json_copy(arguments: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """A deep copy through JSON (so later changes to a passed list do not leak in), or why not."""
    try:
        return json.loads(json.dumps(dict(arguments), allow_nan=False)), None
    except (TypeError, ValueError) as exc:
        kinds = {k: type(v).__name__ for k, v in arguments.items() if not _plain(v)}
        return None, f"its constructor arguments are not JSON-serialisable ({exc}; {kinds})"


def _plain(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def init_args_of(model: Any) -> dict[str, Any] | None:
    """The constructor arguments recorded by :func:`keep_init_args` for ``model``; None when none were.

    >>> from loopml.models.nets import MLP
    >>> init_args_of(MLP(30, 2, hidden=[64]))
    {'n_in': 30, 'n_out': 2, 'hidden': [64]}
    """
    recorded = getattr(model, _ATTR, None)
    if not recorded or recorded[0] is not type(model) or recorded[1] is None:
        return None
    return dict(recorded[1])


def model_spec(model: "torch.nn.Module", init_args: Mapping[str, Any] | None, *, check: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """``({"class_path", "init_args"}, None)`` when the ``torch`` format rebuilds ``model``, else ``(None, why)``.

    ``init_args`` given by the caller must rebuild the model: a wrong one raises
    ``ValueError`` (the caller asked for it). Otherwise the arguments recorded by
    :func:`keep_init_args` are used, else none (``Class()``). ``check=False`` skips
    the rebuild check (the ``torch`` format is not being stored). Example::

        spec, why = model_spec(nn.Sequential(nn.Linear(4, 2)), None)
        # None, "torch.nn.modules.container:Sequential() does not rebuild it (Unexpected key(s) ...)"
    """
    try:
        class_path = class_path_of(model)
    except ValueError as exc:  # a class in __main__ or in a function
        return None, str(exc).split(":")[0]
    if init_args is not None:
        if not isinstance(init_args, Mapping):
            raise ArgumentTypeError(f"Argument init_args should be a mapping of constructor arguments, e.g. {{'hidden': 64}}; got {type(init_args).__name__}")
        args = dict(init_args)
        try:
            json.dumps(args, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ArgumentError(f"Argument init_args should be JSON-serialisable (numbers, strings, lists, dicts): {exc}") from None
        spec = {"class_path": class_path, "init_args": args}
        problem = _rebuild_problem(model, spec) if check else None
        if problem:
            raise ArgumentError(
                f"{class_path}(**{args!r}) does not rebuild this model ({problem}); "
                "pass the constructor arguments as init_args=..., or formats=('pt2',) to store only the exported program"
            )
        return spec, None
    recorded = getattr(model, _ATTR, None)
    if recorded and recorded[0] is type(model):
        if recorded[1] is None:
            return None, str(recorded[2])
        spec = {"class_path": class_path, "init_args": dict(recorded[1])}
        problem = _rebuild_problem(model, spec) if check else None
        if problem:
            return None, f"{class_path}(**{recorded[1]!r}), its recorded arguments, does not rebuild it ({problem})"
        return spec, None
    spec = {"class_path": class_path, "init_args": {}}
    problem = _rebuild_problem(model, spec) if check else None
    if problem:
        return None, f"{class_path}() with no arguments does not rebuild it ({problem})"
    return spec, None


def _rebuild_problem(model: "torch.nn.Module", spec: Mapping[str, Any]) -> str | None:
    """None when ``Class(**init_args)`` takes the model's state dict exactly; else what went wrong, in one line."""
    try:
        cls = import_class(spec["class_path"])
        fresh = cls(**spec["init_args"])
        fresh.load_state_dict(model.state_dict(), strict=True)
    except Exception as exc:  # any constructor or load error is reported to the user, with the fix
        text = " ".join(str(exc).split()).rstrip(".")
        return f"{type(exc).__name__}: {text[:300]}"
    return None
