"""The training loop. Everything else (logging, checkpoints, early stopping, ...) is a callback.

>>> from loopml.train import EarlyStopping
>>> trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
...                   metrics=["accuracy"], callbacks=[EarlyStopping(patience=3)])
>>> trainer = trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=2, batch_size=64)
>>> trainer.evaluate((x_test, y_test))
{'loss': 0.1..., 'accuracy': 0.9...}
"""

from __future__ import annotations

import copy
import inspect
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ArgumentError, ArgumentTypeError
from .autolog import Tracking
from .callbacks import EVENTS, Callback
from .checkpoint import FORMAT, get_rng_state, load_checkpoint, set_rng_state
from .distributed import set_epoch, setup
from .loaders import as_loader, data_fingerprint, run_data_check
from .metrics import Metric, expected_cost, get_metric

__all__ = ["State", "Trainer"]


@dataclass
class State:
    """What the loop knows; callbacks read and write it (``should_stop``)."""

    epoch: int = 0  # epochs started; after epoch_end, epochs completed (1-based, like ignite)
    step: int = 0  # optimizer steps taken
    epochs: int = 0
    batch_size: int = 0
    batches: int | None = None  # batches per epoch, when the loader knows
    loss: float = float("nan")  # the last batch's training loss
    metrics: dict[str, Any] = field(default_factory=dict)  # this epoch's train_*, val_*, lr, samples_per_s
    eval_result: dict[str, Any] = field(default_factory=dict)  # the last evaluate()
    fingerprints: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, Any] = field(default_factory=dict)  # train/val data that have a fingerprint
    store_data: bool = True  # the tracking callback stores the datasets' rows too, not only their records
    data_report: Any = None  # the loopml.data.CheckReport of train/val, when fit checked them
    should_stop: bool = False
    exception: BaseException | None = None


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)):
        return (batch[0], batch[1]) if len(batch) >= 2 else (batch[0], None)
    return batch, None


def _to(x: Any, device: torch.device) -> Any:
    """A batch's inputs on ``device``: a tensor, or a tuple of them (``model(*inputs)``, e.g. a graph's x and edge_index)."""
    return tuple(t.to(device) for t in x) if isinstance(x, (tuple, list)) else x.to(device)


def _rows(batch: Any) -> Any:
    """A graph batch's third part (``loopml.data.graph``): the output rows its targets belong to; else None.

    A graph batch is ``((x, edge_index), y, rows)``: its inputs are a tuple. Other three-part
    batches (a Dataset of ``(x, y, weight)``) keep training on their first two parts, as before.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 3 and isinstance(batch[0], (tuple, list)):
        return batch[2]
    return None


def _labeled(out: torch.Tensor, y: torch.Tensor, rows: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A graph batch's outputs at its target rows, without the nodes that have no label (class -1)."""
    keep = y >= 0  # one index of the outputs, not two: each costs a copy forward and a scatter backward
    return out[rows.to(y.device)[keep]], y[keep]


def _unlabeled(name: str) -> ArgumentError:
    return ArgumentError(f"Argument {name} has no labeled node (y >= 0) to compute a loss on: every label of its nodes is -1. "
                         "Pass a node set with labels (loopml.data.split_nodes makes them); trainer.predict(nodes) "
                         "answers for unlabeled nodes")


def _arity_error(model: nn.Module, args: tuple[Any, ...], exc: TypeError) -> ArgumentTypeError | None:
    """A clear error when ``model.forward`` cannot take the batch's inputs (a graph model on rows, or the reverse)."""
    try:
        signature = inspect.signature(model.forward)
        signature.bind(*args)
    except TypeError:
        pass
    except ValueError:  # no signature to read (a builtin): the model's own error stands
        return None
    else:
        return None  # the call fitted: the TypeError came from inside the model
    name = type(model).__name__
    if len(args) == 2:
        return ArgumentTypeError(
            f"{name}.forward{signature} cannot take a graph batch, called as model(x, edge_index) ({exc}); "
            "a graph's nodes train a graph model: loopml.models.GCN, GraphSAGE, GAT, NodeMLP (which ignores the edges) "
            "or a PyTorch Geometric model")
    return ArgumentTypeError(
        f"{name}.forward{signature} cannot be called with the batch's {len(args)} input(s) ({exc}); "
        "a graph model, forward(x, edge_index), trains on a graph's nodes: trainer.fit(graph.nodes('train'))")


class Trainer:
    """Trains a model: ``fit``, ``evaluate``, ``predict``; callbacks hook into the events of :data:`EVENTS`.

    ``optimizer`` is an optimizer over the model's parameters, or a factory
    called with them (``functools.partial(torch.optim.SGD, lr=0.1)``); default
    Adam(lr=1e-3). ``loss`` defaults to cross-entropy. ``track=True`` adds a
    :class:`Tracking` callback (unless one is given) that logs to the active
    run or a new one. Under ``torchrun``, ``distributed="auto"`` trains with
    DistributedDataParallel (:mod:`loopml.train.distributed`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
        loss: Callable[[Any, Any], torch.Tensor] | None = None,
        metrics: Sequence[Metric | str] = (),
        callbacks: Sequence[Callback] = (),
        mode: str = "eager",
        device: str | torch.device = "cpu",
        seed: int = 0,
        log_every: int = 10,
        track: bool = True,
        experiment: str = "default",
        compile_options: dict[str, Any] | None = None,
        distributed: bool | str = "auto",
    ) -> None:
        example = "e.g. Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), metrics=['accuracy'])"
        if not isinstance(model, nn.Module):
            raise ArgumentTypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}; {example}")
        if mode not in ("eager", "compile"):
            raise ArgumentError(f"Argument mode should be 'eager' or 'compile', got {mode!r}")
        for name, value, low in (("seed", seed, 0), ("log_every", log_every, 1)):
            if type(value) is not int or value < low:
                raise ArgumentError(f"Argument {name} should be an integer >= {low}, got {value!r}")
        if loss is not None and not callable(loss):
            raise ArgumentTypeError(f"Argument loss should be callable as loss(output, target), got {loss!r}; "
                            f"e.g. loss=torch.nn.MSELoss()")
        bad = [c for c in callbacks if not isinstance(c, Callback)]
        if isinstance(callbacks, (str, bytes)) or bad:
            raise ArgumentTypeError(f"Argument callbacks should be a list of loopml.train callbacks, got {bad or callbacks!r}; "
                            f"e.g. callbacks=[EarlyStopping(monitor='val_loss', patience=3)]")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ArgumentError(f"Argument device should be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from exc
        self.model = model.to(self.device)
        if optimizer is None:
            optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        elif not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(self.model.parameters()) if callable(optimizer) else optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ArgumentTypeError(f"Argument optimizer should be a torch.optim.Optimizer or a factory of one, "
                            f"got {type(optimizer).__name__}; {example}")
        self.optimizer = optimizer
        self.loss_fn = loss if loss is not None else nn.CrossEntropyLoss()
        self.metrics = [get_metric(m) for m in metrics]
        self._dist = setup(distributed, self.device, self.metrics)
        self.mode, self.seed, self.log_every, self.experiment = mode, seed, log_every, experiment
        self.generator = torch.Generator().manual_seed(seed)  # shuffling; saved in checkpoints
        self.state = State()
        # self.model stays the plain module (checkpoints, evaluation); training steps go through DDP
        self._wrapped: nn.Module = self.model if self._dist is None else self._dist.wrap(self.model, self.device)
        self._forward: Callable[..., Any] = self._wrapped
        if mode == "compile":
            try:
                self._forward = torch.compile(self._wrapped, **(compile_options or {}))
            except Exception as exc:  # noqa: BLE001 - any compiler set-up failure means "run eager"
                self._fallback(exc)
        self._handlers: dict[str, list[tuple[Callable[[Trainer], Any], int]]] = {e: [] for e in EVENTS}
        self.callbacks = list(callbacks)
        if track and not any(isinstance(c, Tracking) for c in self.callbacks):
            self.callbacks.append(Tracking(every=log_every, experiment=experiment))
        self.callbacks.sort(key=lambda c: c.order)  # stable: the given order within one rank
        for cb in self.callbacks:
            if self.is_main_process or not cb.rank_zero_only:
                cb.attach(self)

    @property
    def world_size(self) -> int:
        """How many processes train together (1 without torchrun)."""
        return 1 if self._dist is None else self._dist.world_size

    @property
    def is_main_process(self) -> bool:
        """True on rank 0 (and without torchrun): the process that logs and writes checkpoints."""
        return self._dist is None or self._dist.is_main

    # -- events -----------------------------------------------------------

    def add_event_handler(self, event: str, handler: Callable[[Trainer], Any], *, every: int = 1) -> None:
        """Call ``handler(trainer)`` on ``event``; ``every=N``: on every N-th step (batch events) or epoch."""
        if event not in EVENTS:
            raise ArgumentError(f"Argument event should be one of {list(EVENTS)}, got {event!r}")
        if type(every) is not int or every < 1:
            raise ArgumentError(f"Argument every should be an integer >= 1, got {every!r}")
        self._handlers[event].append((handler, every))

    def on(self, event: str, *, every: int = 1) -> Callable[[Callable[[Trainer], Any]], Callable[[Trainer], Any]]:
        """Decorator form of :meth:`add_event_handler`."""
        def register(fn: Callable[[Trainer], Any]) -> Callable[[Trainer], Any]:
            self.add_event_handler(event, fn, every=every)
            return fn
        return register

    def fire(self, event: str) -> None:
        count = self.state.step if event in ("batch_end", "backward_end") else self.state.epoch
        for handler, every in self._handlers[event]:
            if every == 1 or count % every == 0:
                handler(self)

    # -- the loop ---------------------------------------------------------

    def fit(self, train: Any, val: Any = None, *, epochs: int, batch_size: int = 32,
            resume_from: Any = None, check_data: bool = True, store_data: bool = True) -> Trainer:
        """Train for ``epochs`` epochs (in total: a resumed fit runs the remaining ones).

        ``store_data``: with tracking, store the rows of loopml datasets ``train`` and
        ``val`` (by content, once: :func:`loopml.data.store_dataset`) so that a version
        registered from the run can be retrained or evaluated later; ``False`` for data
        too large to copy: then only their records (fingerprint, schema, profile) are kept.
        """
        for name, value in (("epochs", epochs), ("batch_size", batch_size)):
            if type(value) is not int or value < 1:
                raise ArgumentError(f"Argument {name} should be an integer >= 1, got {value!r}; "
                                 f"e.g. trainer.fit((x, y), epochs=10, batch_size=64)")
        if not isinstance(store_data, bool):
            raise ArgumentTypeError(f"Argument store_data should be True or False, got {store_data!r}")
        report = run_data_check(train, val, model=self.model) if check_data else None
        loader = as_loader(train, name="train", batch_size=batch_size, shuffle=True, generator=self.generator,
                           sampler=None if self._dist is None else self._dist.train_sampler(self.seed))
        if val is not None:
            as_loader(val, name="val", batch_size=batch_size, shuffle=False)  # fail on bad val now, not after an epoch
        datasets = {k: d for k, d in (("train", train), ("val", val)) if data_fingerprint(d) is not None}
        self.state = State(epochs=epochs, batch_size=batch_size, datasets=datasets, data_report=report, store_data=store_data,
                           fingerprints={k: str(data_fingerprint(d)) for k, d in datasets.items()},
                           batches=len(loader) if hasattr(loader, "__len__") else None)
        if resume_from is not None:
            self.load_state_dict(load_checkpoint(resume_from))
        else:
            torch.manual_seed(self.seed)
            np.random.seed(self.seed)
            random.seed(self.seed)
        try:
            self.fire("fit_start")
            while self.state.epoch < epochs and not self.state.should_stop:
                self._run_epoch(loader, val)
            self.fire("fit_end")
        except BaseException as exc:
            self.state.exception = exc
            self.fire("exception")
            raise
        return self

    def _run_epoch(self, loader: Any, val: Any) -> None:
        s = self.state
        s.epoch += 1
        s.metrics = {}
        set_epoch(loader, s.epoch)
        self.fire("epoch_start")
        self.model.train()
        for m in self.metrics:
            m.reset()
        total, seen, skipped, started = 0.0, 0.0, 0, time.perf_counter()
        for batch in loader:
            out, y = self._outputs(batch)
            if not len(y):
                skipped += 1  # a sampled graph batch whose seed nodes have no label
                continue
            loss = self.loss_fn(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.fire("backward_end")
            self.optimizer.step()
            s.step += 1
            s.loss = float(loss.detach())
            total, seen = total + s.loss * len(y), seen + len(y)
            for m in self.metrics:
                m.update(out.detach(), y)
            self.fire("batch_end")
        if skipped and not seen:
            raise _unlabeled("train")
        elapsed = time.perf_counter() - started
        if self._dist is not None:  # every rank reports the epoch over all ranks
            total, seen = self._dist.reduce(self.metrics, (total, seen))
        groups = self.optimizer.param_groups
        s.metrics = {"train_loss": total / max(seen, 1), "samples_per_s": seen / elapsed, "lr": float(groups[0]["lr"])}
        if len(groups) > 1:  # per-group learning rates (transfer learning): lr_0, lr_1, ...
            s.metrics.update({f"lr_{i}": float(g["lr"]) for i, g in enumerate(groups)})
        s.metrics.update({f"train_{m.name}": m.compute() for m in self.metrics})
        if val is not None:
            s.metrics.update({f"val_{k}": v for k, v in self.evaluate(val).items()})
        self.fire("epoch_end")

    def _outputs(self, batch: Any, *, train: bool = True) -> tuple[Any, Any]:
        """The model's outputs for a batch and its targets; a graph batch's at its labeled target rows only."""
        x, y = _split(batch)
        x, y, rows = _to(x, self.device), y.to(self.device), _rows(batch)
        out = self._call(x, train=train)
        return (out, y) if rows is None else _labeled(out, y, rows)

    def _call(self, x: Any, *, train: bool = True) -> Any:
        args = tuple(x) if isinstance(x, tuple) else (x,)
        try:
            if not train and self._dist is not None:
                return self.model(*args)  # no DDP collectives outside training: the ranks' eval shards differ in length
            return self._forward(*args)
        except Exception as exc:
            if isinstance(exc, TypeError) and (error := _arity_error(self.model, args, exc)) is not None:
                raise error from exc
            if self._forward is self._wrapped or (not train and self._dist is not None):
                raise
            self._fallback(exc)  # the compiled model failed: the eager one raises the user's own errors
            return self._wrapped(*args)

    def _fallback(self, exc: Exception) -> None:
        warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:300]}); training in eager mode",
                      RuntimeWarning, stacklevel=3)
        self._forward = self._wrapped

    # -- evaluation -------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, data: Any, *, cost_matrix: Any = None, batch_size: int | None = None) -> dict[str, Any]:
        """Loss and metrics on ``data``; with ``cost_matrix`` (``C[true, predicted]``) the expected cost
        per prediction and, for binary problems, the threshold that minimises it.

        Under torchrun every rank must call it: each evaluates its shard and the results are
        combined (a DataLoader you pass is evaluated whole on every rank)."""
        shard = self._dist is not None and not isinstance(data, torch.utils.data.DataLoader)
        loader = as_loader(data, name="data", batch_size=batch_size or self.state.batch_size or 256, shuffle=False,
                           sampler=self._dist.eval_sampler if shard and self._dist is not None else None)
        metrics = [copy.deepcopy(m) for m in self.metrics]
        for m in metrics:
            m.reset()
        was_training, outputs, targets, total, seen, skipped = self.model.training, [], [], 0.0, 0.0, 0
        self.model.eval()
        try:
            for batch in loader:
                out, y = self._outputs(batch, train=False)
                if not len(y):
                    skipped += 1
                    continue
                total, seen = total + float(self.loss_fn(out, y)) * len(y), seen + len(y)
                for m in metrics:
                    m.update(out, y)
                if cost_matrix is not None:
                    outputs.append(out.cpu())
                    targets.append(y.cpu())
        finally:
            self.model.train(was_training)
        if skipped and not seen:
            raise _unlabeled("data")
        if shard and self._dist is not None:
            total, seen = self._dist.reduce(metrics, (total, seen))
            if cost_matrix is not None:
                outputs = [t for part in self._dist.gather(outputs) for t in part]
                targets = [t for part in self._dist.gather(targets) for t in part]
        result: dict[str, Any] = {"loss": total / max(seen, 1), **{m.name: m.compute() for m in metrics}}
        if cost_matrix is not None:
            result.update(expected_cost(torch.cat(outputs), torch.cat(targets), cost_matrix))
        self.state.eval_result = result
        self.fire("eval_end")
        return result

    @torch.no_grad()
    def predict(self, data: Any, *, batch_size: int = 256) -> torch.Tensor:
        """The model's outputs for ``data`` (inputs alone, (x, y), a Dataset or a DataLoader), on the CPU."""
        if isinstance(data, torch.Tensor):
            data = (data,)
        loader = as_loader(data, name="data", batch_size=batch_size, shuffle=False)
        was_training = self.model.training
        self.model.eval()
        try:
            outs = []
            for b in loader:
                out = self._call(_to(_split(b)[0], self.device), train=False)
                rows = _rows(b)
                outs.append((out if rows is None else out[rows.to(out.device)]).cpu())
            return torch.cat(outs)
        finally:
            self.model.train(was_training)

    # -- state ------------------------------------------------------------

    def _callback_keys(self) -> list[str]:
        names = [type(c).__name__ for c in self.callbacks]
        return [n if names.count(n) == 1 else f"{n}.{i}" for i, n in enumerate(names)]

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed fit needs: the checkpoint format of :mod:`loopml.train.checkpoint`."""
        model_cls = type(self.model)
        return {
            "format": FORMAT,
            "model_class": f"{model_cls.__module__}.{model_cls.__qualname__}",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {"epoch": self.state.epoch, "step": self.state.step, "seed": self.seed},
            "rng": get_rng_state(self.generator),
            "callbacks": {k: c.state_dict() for k, c in zip(self._callback_keys(), self.callbacks)},
            "metrics": {k: v for k, v in self.state.metrics.items() if isinstance(v, (int, float))},
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state.epoch, self.state.step = ckpt["trainer"]["epoch"], ckpt["trainer"]["step"]
        self.state.metrics = dict(ckpt.get("metrics", {}))
        set_rng_state(ckpt["rng"], self.generator)
        saved = ckpt.get("callbacks", {})
        for key, cb in zip(self._callback_keys(), self.callbacks):
            if key in saved:
                cb.load_state_dict(saved[key])
