"""Transfer learning: freeze and unfreeze by module name, per-group learning rates, weights from a checkpoint.

>>> from loopml.models.nets import DigitsCNN
>>> from loopml.train import Trainer, freeze, load_weights, param_groups
>>> from loopml.train.checkpoint import atomic_save
>>> atomic_save(Trainer(model, track=False).state_dict(), "pretrain/best.pt")   # a trained model's checkpoint
PosixPath('pretrain/best.pt')
>>> new = DigitsCNN()                                    # features + head
>>> report = load_weights(new, "pretrain/best.pt")       # all but head.*
>>> opt = torch.optim.Adam(param_groups(new, {"features": 1e-4, "head": 1e-2}))   # or freeze(new, "features")
>>> few_shot = (x_train[:50], y_train[:50])
>>> trainer = Trainer(new, optimizer=opt).fit(few_shot, epochs=3)

Names are the module and parameter names of ``model.named_parameters()``. A
pattern selects a parameter when it equals the parameter's name or one of the
modules that hold it (``"features"`` selects ``features.0.weight``), or
matches one of them as a glob (``"features.*"``, ``"*.bias"``, ``"head.[12]"``).

Starting from a *registered* model version (``load_weights(model, "models:/digits/3")``)
is not supported yet: ``load_weights`` takes a checkpoint file written by :class:`~loopml.train.Checkpoint` or
``trainer.state_dict()``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArgumentError, ArgumentTypeError, LoopMLError
from .checkpoint import load_checkpoint

__all__ = ["LoadReport", "freeze", "load_weights", "param_groups", "trainable_parameters", "unfreeze"]


def _check_model(model: Any, who: str) -> None:
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"Argument model of {who} should be a torch.nn.Module, got {type(model).__name__}")


def _top_level(model: nn.Module) -> list[str]:
    names = [n for n, _ in model.named_children()]
    names += [n for n, _ in model.named_parameters(recurse=False)]
    return names


def _scopes(param_name: str) -> list[str]:
    """``"features.0.weight"`` -> ``["features", "features.0", "features.0.weight"]``."""
    parts = param_name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _matches(param_name: str, pattern: str) -> bool:
    return any(s == pattern or fnmatch.fnmatchcase(s, pattern) for s in _scopes(param_name))


def _select(model: nn.Module, patterns: Sequence[str], who: str, example: str) -> list[tuple[str, nn.Parameter]]:
    """The parameters that any of ``patterns`` selects; every pattern must select at least one."""
    bad = [p for p in patterns if not isinstance(p, str) or not p]
    if bad:
        raise ArgumentTypeError(f"Arguments of {who} should be module names or globs (non-empty strings), got {bad!r}; "
                        f"e.g. {example}")
    named = list(model.named_parameters())
    unknown = [p for p in patterns if not any(_matches(n, p) for n, _ in named)]
    if unknown:
        raise ArgumentError(f"Arguments of {who} should name modules or parameters of the model: "
                         f"{', '.join(map(repr, unknown))} matches none; the model's top-level modules are "
                         f"{_top_level(model)}; e.g. {example}")
    return [(n, p) for n, p in named if any(_matches(n, pat) for pat in patterns)]


def freeze(model: nn.Module, *names: str) -> list[str]:
    """Stop training the parameters under ``names`` (module names or globs); no names: all of them.

    Sets ``requires_grad=False`` and returns the names of the parameters it
    froze. Build the optimizer afterwards, over :func:`trainable_parameters`
    or :func:`param_groups` (both leave frozen parameters out); an optimizer
    that already holds them skips them anyway, since they get no gradient.
    Batch-norm running statistics still update in ``train()`` mode: put
    frozen batch-norm modules in ``eval()`` if they should stay as they are.

    >>> freeze(model, "features")
    ['features.0.weight', 'features.0.bias', ...]
    >>> freeze(model, "*.bias", "head.1")
    ['features.0.bias', 'features.2.bias', 'head.1.weight', 'head.1.bias', 'head.3.bias']
    """
    _check_model(model, "freeze")
    chosen = _select(model, names, "freeze", "freeze(model, 'features')") if names else list(model.named_parameters())
    for _, p in chosen:
        p.requires_grad_(False)
    return [n for n, _ in chosen]


def unfreeze(model: nn.Module, *names: str) -> list[str]:
    """Train the parameters under ``names`` again (``requires_grad=True``); no names: all of them.

    Returns the names of the parameters it unfroze. An optimizer built while
    they were frozen does not hold them: build a new one (or ``add_param_group``).

    >>> frozen = freeze(model)
    >>> unfreeze(model, "head", "features.2")
    ['features.2.weight', 'features.2.bias', 'head.1.weight', 'head.1.bias', 'head.3.weight', 'head.3.bias']
    """
    _check_model(model, "unfreeze")
    chosen = _select(model, names, "unfreeze", "unfreeze(model, 'head')") if names else list(model.named_parameters())
    for _, p in chosen:
        p.requires_grad_(True)
    return [n for n, _ in chosen]


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad``, for an optimizer: ``Adam(trainable_parameters(model))``."""
    _check_model(model, "trainable_parameters")
    return [p for p in model.parameters() if p.requires_grad]


def param_groups(model: nn.Module, lrs: Mapping[str, float], *, default_lr: float | None = None,
                 trainable_only: bool = True) -> list[dict[str, Any]]:
    """Optimizer parameter groups with a learning rate per module name (prefix or glob).

    A parameter goes to the most specific name that selects it (``"features.2"``
    before ``"features"``); the ones no name selects form a last group with
    ``default_lr``, or, when ``default_lr`` is None, without an ``lr`` key, so
    the optimizer's own ``lr=`` applies. Frozen parameters are left out
    (``trainable_only=False`` keeps them). Empty groups are dropped.

    >>> opt = torch.optim.Adam(param_groups(model, {"features": 1e-4, "head": 1e-2}))
    >>> [g["lr"] for g in opt.param_groups]
    [0.0001, 0.01]
    """
    _check_model(model, "param_groups")
    example = "param_groups(model, {'features': 1e-4, 'head': 1e-2})"
    if not isinstance(lrs, Mapping) or not lrs:
        raise ArgumentTypeError(f"Argument lrs should be a non-empty dict of module name -> learning rate, got {lrs!r}; "
                        f"e.g. {example}")
    for name, lr in [*lrs.items(), *([("default_lr", default_lr)] if default_lr is not None else [])]:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0:
            raise ArgumentError(f"Argument lrs should map names to learning rates >= 0, got {name!r}: {lr!r}; "
                             f"e.g. {example}")
    _select(model, list(lrs), "param_groups", example)  # every name must select something
    # most specific first: a longer pattern is more specific; the given order breaks ties
    ranked = sorted(lrs, key=lambda pat: -len(pat))
    buckets: dict[str | None, list[nn.Parameter]] = {name: [] for name in lrs}
    buckets[None] = []
    for pname, p in model.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        owner = next((pat for pat in ranked if _matches(pname, pat)), None)
        buckets[owner].append(p)
    groups: list[dict[str, Any]] = [{"params": buckets[name], "lr": float(lrs[name])} for name in lrs if buckets[name]]
    if buckets[None]:
        groups.append({"params": buckets[None], **({"lr": float(default_lr)} if default_lr is not None else {})})
    if not groups:
        raise ArgumentError("Argument model should have trainable parameters: every parameter is frozen; "
                         "unfreeze some first, e.g. unfreeze(model, 'head')")
    return groups


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: the keys it loaded, and those it did not, by reason."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint: left as they were
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[str] = field(default_factory=list)  # in both, of different shapes: left as they were
    excluded: list[str] = field(default_factory=list)  # model keys that ``exclude`` kept as they were
    model_class: str = ""  # the class of the model the checkpoint was written from

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.model_class or 'a checkpoint'}"]
        for what in ("excluded", "missing", "unexpected", "mismatched"):
            keys = getattr(self, what)
            if keys:
                parts.append(f"{what} {len(keys)}: {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}")
        return "; ".join(parts)


def _excluded(key: str, exclude: Iterable[str]) -> bool:
    return any(key.startswith(e) or fnmatch.fnmatchcase(key, e) for e in exclude)


def load_weights(model: nn.Module, checkpoint_path: str | os.PathLike[str], *, strict: bool = False,
                 exclude: Sequence[str] = ("head.",)) -> LoadReport:
    """Copy the weights of a loopml checkpoint into ``model``, all but the keys under ``exclude``.

    The file is read with ``torch.load(weights_only=True)`` (see
    :mod:`loopml.train.checkpoint`). ``exclude`` holds key prefixes or globs
    (default ``("head.",)``: a new head for the new task); those keys keep the
    model's values. Keys in only one of the two, or of different shapes, are
    reported in the returned :class:`LoadReport` and skipped; with
    ``strict=True`` any of them raises :class:`~loopml.errors.LoopMLError`.
    Checkpoints of a model wrapped in ``DistributedDataParallel`` (keys
    ``module.*``) load into the bare model.

    Registered model versions (``"models:/name/3"``) are not taken yet.

    >>> from loopml.train import Trainer
    >>> from loopml.train.checkpoint import atomic_save
    >>> atomic_save(Trainer(model, track=False).state_dict(), "pretrain/best.pt")
    PosixPath('pretrain/best.pt')
    >>> report = load_weights(model, "pretrain/best.pt", exclude=("head.",))
    >>> report.loaded[:2], report.excluded[:2], report.missing, report.unexpected
    (['features.0.weight', 'features.0.bias'], ['head.1.weight', 'head.1.bias'], [], [])
    """
    _check_model(model, "load_weights")
    if isinstance(exclude, str) or not all(isinstance(e, str) for e in exclude):
        raise ArgumentTypeError(f"Argument exclude should be a tuple of key prefixes or globs, got {exclude!r}; "
                        f"e.g. exclude=('head.',)")
    if not isinstance(checkpoint_path, (str, os.PathLike)) or not Path(checkpoint_path).is_file():
        raise ArgumentError(f"Argument checkpoint_path should be a loopml checkpoint file, got {checkpoint_path!r} "
                         f"(no such file); e.g. Checkpoint('ck') writes ck/best.pt and ck/last.pt")
    ckpt = load_checkpoint(checkpoint_path)
    weights = ckpt.get("model")
    if not isinstance(weights, dict):
        raise LoopMLError(f"{checkpoint_path} holds no model weights (no 'model' state dict)")
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    own = model.state_dict()
    excluded = [k for k in own if _excluded(k, exclude)]
    candidates = {k: v for k, v in weights.items() if not _excluded(k, exclude)}
    unexpected = [k for k in candidates if k not in own]
    mismatched = [k for k, v in candidates.items()
                  if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)]
    take = {k: v for k, v in candidates.items() if k in own and k not in mismatched}
    missing = [k for k in own if k not in take and k not in excluded and k not in mismatched]
    report = LoadReport(loaded=list(take), missing=missing, unexpected=unexpected, mismatched=mismatched,
                        excluded=excluded, model_class=str(ckpt.get("model_class", "")))
    if strict and not report.ok:
        raise LoopMLError(f"Checkpoint {checkpoint_path} does not fit {type(model).__name__} (strict=True): "
                          f"{report}; pass strict=False to load what fits, or exclude=(...) the differing keys")
    with torch.no_grad():
        model.load_state_dict(take, strict=False)
    return report
