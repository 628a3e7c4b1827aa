"""Callbacks: everything the loop does besides training. Each receives the trainer.

A callback defines ``on_<event>(trainer)`` methods for the events in
:data:`EVENTS`; :meth:`Callback.attach` registers them, with ``every=`` from
:meth:`Callback.every_for`. Callbacks run in ``order`` (lower first, stable),
so that a checkpoint is written after the scheduler stepped and the tracker
logs after both.

>>> from loopml.train import Trainer
>>> class PrintLoss(Callback):
...     def on_epoch_end(self, trainer):
...         print(trainer.state.epoch, trainer.state.step)
>>> trainer = Trainer(model, callbacks=[PrintLoss()]).fit((x_train, y_train), epochs=2, batch_size=256)
1 5
2 10
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ArgumentError, ArgumentTypeError
from .checkpoint import atomic_save

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["EVENTS", "Callback", "Checkpoint", "EarlyStopping", "GradientClipping", "LRScheduler"]

EVENTS = (
    "fit_start",
    "epoch_start",
    "backward_end",  # gradients computed, optimizer not yet stepped
    "batch_end",
    "eval_end",
    "epoch_end",
    "fit_end",
    "exception",  # trainer.state.exception holds it; it is re-raised after the handlers
)


class Callback:
    """Base class. Override ``on_<event>`` methods, and ``state_dict``/``load_state_dict`` if stateful.

    ``rank_zero_only = True``: under torchrun only rank 0 attaches it (writers: logs, files, output).
    """

    order = 0
    rank_zero_only = False

    def every_for(self, event: str) -> int:
        return 1

    def attach(self, trainer: Trainer) -> None:
        for event in EVENTS:
            handler = getattr(self, f"on_{event}", None)
            if handler is not None:
                trainer.add_event_handler(event, handler, every=self.every_for(event))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _monitored(trainer: Trainer, monitor: str, who: str) -> float:
    metrics = trainer.state.metrics
    if monitor not in metrics:
        hint = " (fit() got no val data)" if monitor.startswith("val_") else ""
        raise ArgumentError(
            f"Argument monitor of {who} should name a metric of the epoch{hint}: got {monitor!r}, "
            f"have {sorted(k for k, v in metrics.items() if isinstance(v, float))}; e.g. {who}(monitor='train_loss')"
        )
    return float(metrics[monitor])


def _check_mode(mode: str, who: str) -> None:
    if mode not in ("min", "max"):
        raise ArgumentError(f"Argument mode of {who} should be 'min' or 'max', got {mode!r}")


def _better(value: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    if math.isnan(value):
        return False
    return value < best - min_delta if mode == "min" else value > best + min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    >>> from loopml.train import Trainer
    >>> stop = EarlyStopping(monitor="val_accuracy", mode="max", patience=1)
    >>> trainer = Trainer(model, metrics=["accuracy"], callbacks=[stop])
    >>> trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=50).state.epoch < 50
    True
    """

    def __init__(self, monitor: str = "val_loss", *, mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0) -> None:
        _check_mode(mode, "EarlyStopping")
        if type(patience) is not int or patience < 1:
            raise ArgumentError(f"Argument patience should be an integer >= 1, got {patience!r}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, float(min_delta)
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer) -> None:
        value = _monitored(trainer, self.monitor, "EarlyStopping")
        if _better(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.state.should_stop = True
            self.stopped_epoch = trainer.state.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])


class Checkpoint(Callback):
    """Write ``last.pt`` after every ``every``-th epoch and ``best.pt`` when ``monitor`` improves.

    Files are written to a temp file and ``os.replace``d. Each holds the
    trainer's :meth:`~loopml.train.Trainer.state_dict`: model, optimizer,
    scheduler, RNG states and counters; resume with ``fit(..., resume_from=path)``.
    """

    order = 10
    rank_zero_only = True

    def __init__(self, dirname: str | os.PathLike[str], *, monitor: str = "val_loss", mode: str = "min",
                 save_best: bool = True, save_last: bool = True, every: int = 1) -> None:
        _check_mode(mode, "Checkpoint")
        if type(every) is not int or every < 1:
            raise ArgumentError(f"Argument every should be an integer >= 1, got {every!r}")
        self.dirname = Path(dirname)
        self.monitor, self.mode, self.save_best, self.save_last, self.every = monitor, mode, save_best, save_last, every
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch: int | None = None

    @property
    def last_path(self) -> Path:
        return self.dirname / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.dirname / "best.pt"

    def on_epoch_end(self, trainer: Trainer) -> None:
        improved = False
        if self.save_best:
            value = _monitored(trainer, self.monitor, "Checkpoint")
            if _better(value, self.best, self.mode):
                self.best, self.best_epoch, improved = value, trainer.state.epoch, True
        if not (improved or (self.save_last and trainer.state.epoch % self.every == 0)):
            return
        ckpt = trainer.state_dict()  # after updating best, so that a resumed Checkpoint knows it
        if self.save_last and trainer.state.epoch % self.every == 0:
            atomic_save(ckpt, self.last_path)
        if improved:
            atomic_save(ckpt, self.best_path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": -1 if self.best_epoch is None else self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = None if state["best_epoch"] < 0 else int(state["best_epoch"])


class LRScheduler(Callback):
    """Step a torch LR scheduler after every epoch (or batch: ``step_on="batch"``); keeps ``lrs``.

    ``scheduler`` is a scheduler, or a factory called with the trainer's optimizer.
    ``ReduceLROnPlateau`` steps on ``monitor`` (default ``val_loss``). The
    learning rate is in ``trainer.state.metrics["lr"]``, which Tracking logs.

    >>> from loopml.train import Trainer
    >>> sched = LRScheduler(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5))
    >>> trainer = Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[sched])
    >>> trainer = trainer.fit((x_train, y_train), epochs=4, batch_size=256)
    >>> sched.lrs
    [0.1, 0.05, 0.05, 0.025]
    """

    def __init__(self, scheduler: Any, *, step_on: str = "epoch", monitor: str = "val_loss") -> None:
        if step_on not in ("epoch", "batch"):
            raise ArgumentError(f"Argument step_on should be 'epoch' or 'batch', got {step_on!r}")
        if not (callable(scheduler) or hasattr(scheduler, "step")):
            raise ArgumentTypeError(f"Argument scheduler should be a torch LR scheduler or a factory of one, got {scheduler!r}")
        self._scheduler_or_factory = scheduler
        self.scheduler: Any = None
        self.step_on, self.monitor = step_on, monitor
        self.lrs: list[float] = []

    def attach(self, trainer: Trainer) -> None:
        s = self._scheduler_or_factory
        self.scheduler = s if hasattr(s, "step") and hasattr(s, "state_dict") else s(trainer.optimizer)
        if getattr(self.scheduler, "optimizer", trainer.optimizer) is not trainer.optimizer:
            raise ArgumentError("Argument scheduler should wrap the trainer's optimizer; pass a factory: "
                             "LRScheduler(lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1))")
        super().attach(trainer)

    def _step(self, trainer: Trainer) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(_monitored(trainer, self.monitor, "LRScheduler"))
        else:
            self.scheduler.step()
        lr = float(trainer.optimizer.param_groups[0]["lr"])
        self.lrs.append(lr)
        trainer.state.metrics["lr"] = lr

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.step_on == "batch":
            self._step(trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.step_on == "epoch":
            self._step(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


class GradientClipping(Callback):
    """Clip the gradients' total norm to ``max_norm`` before each optimizer step; ``last_norm`` is the norm before."""

    def __init__(self, max_norm: float, *, norm_type: float = 2.0) -> None:
        if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool) or not max_norm > 0:
            raise ArgumentError(f"Argument max_norm should be a number > 0, got {max_norm!r}; e.g. GradientClipping(1.0)")
        self.max_norm, self.norm_type = float(max_norm), float(norm_type)
        self.last_norm = float("nan")

    def on_backward_end(self, trainer: Trainer) -> None:
        params = [p for p in trainer.model.parameters() if p.grad is not None]
        self.last_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type))


def lambda_callback(**handlers: Callable[[Trainer], Any]) -> Callback:
    """A callback from functions: ``lambda_callback(on_epoch_end=lambda t: print(t.state.epoch))``."""
    cb = Callback()
    for name, fn in handlers.items():
        if not name.startswith("on_") or name[3:] not in EVENTS:
            raise ArgumentError(f"Argument {name} should be on_<event> with an event from {list(EVENTS)}")
        setattr(cb, name, fn)
    return cb
