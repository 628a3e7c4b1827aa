"""Tracking: log a fit to the active run (or a new one) without a line of logging code.

What it logs (``docs/training.md`` has the table):

- params at fit start: optimizer class and its settings (``lr``, ``optimizer.<name>``),
  batch size, epochs, model class and parameter count, seed, mode, loss, dataset fingerprints;
- ``train_loss_step`` every ``every`` optimizer steps;
- at each epoch end: every scalar of ``trainer.state.metrics`` (``train_loss``,
  ``train_<metric>``, ``val_loss``, ``val_<metric>``, ``lr``, ``samples_per_s``) and ``epoch``;
- at fit end: the best checkpoint of a :class:`Checkpoint` callback, as ``checkpoints/best.pt``.

``run.log`` returns at once (a background thread writes), so logging does not slow the loop.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

from ..data import Dataset, Nodes, log_check, log_dataset
from ..errors import ArgumentError
from ..tracking import api
from .callbacks import Callback, Checkpoint

if TYPE_CHECKING:
    from ..tracking.run import Run
    from .trainer import Trainer

__all__ = ["Tracking"]


def _param_text(value: Any) -> Any:
    if isinstance(value, (str, bool, numbers.Number)):
        return value
    return str(value)


class Tracking(Callback):
    """Log params, losses, metrics, learning rate, throughput and the best checkpoint to a run.

    ``run``: the run to log to; default the thread's active run, else one
    opened with ``loopml.start_run(experiment=experiment)`` and finished when
    the fit ends (FAILED if it raises).
    """

    order = 20
    rank_zero_only = True

    def __init__(self, *, every: int = 10, experiment: str = "default", run: Run | None = None) -> None:
        if type(every) is not int or every < 1:
            raise ArgumentError(f"Argument every should be an integer >= 1, got {every!r}")
        self.every, self.experiment = every, experiment
        self.run: Run | None = run
        self._given = run
        self._owned = False
        self._resume_id: str | None = None

    def every_for(self, event: str) -> int:
        return self.every if event == "batch_end" else 1

    def on_fit_start(self, trainer: Trainer) -> None:
        opt = trainer.optimizer
        model = trainer.model
        params: dict[str, Any] = {
            "optimizer": type(opt).__name__,
            "batch_size": trainer.state.batch_size,
            "epochs": trainer.state.epochs,
            "model": type(model).__name__,
            "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "seed": trainer.seed,
            "mode": trainer.mode,
            "loss": type(trainer.loss_fn).__name__,
        }
        if trainer.world_size > 1:
            params["world_size"] = trainer.world_size
        for key, value in opt.param_groups[0].items():
            if key != "params" and value is not None:
                params["lr" if key == "lr" else f"optimizer.{key}"] = _param_text(value)
        if len(opt.param_groups) > 1:  # per-group learning rates, e.g. a low one for pretrained layers
            params["param_groups"] = len(opt.param_groups)
            params.update({f"lr_{i}": _param_text(g["lr"]) for i, g in enumerate(opt.param_groups)})
        for name, fp in trainer.state.fingerprints.items():
            params[f"{name}_fingerprint"] = fp
        self.run = self._given or api.active_run()
        self._owned = self.run is None
        if self.run is None and self._resume_id is None:  # a new run gets its params in one transaction
            self.run = api.start_run(experiment=self.experiment, params=params)
        else:
            if self.run is None:
                self.run = api.start_run(experiment=self.experiment, run_id=self._resume_id)
            if trainer.state.epoch > 0:  # resumed: params are write-once, keep what the run has
                have = self.run.refresh().params
                params = {k: v for k, v in params.items() if k not in have}
            self.run.log_params(params)
        if trainer.state.epoch == 0:
            self._log_datasets(trainer)

    def _log_datasets(self, trainer: Trainer) -> None:
        """Link loopml datasets (their rows too unless ``fit(store_data=False)``) and their quality report to the run.

        A graph's node sets (:class:`~loopml.data.Nodes`) link their graph, with the sets' sizes as tags.
        """
        assert self.run is not None
        for role, ds in trainer.state.datasets.items():
            if isinstance(ds, (Dataset, Nodes)):
                log_dataset(self.run, ds, role=role, keep_rows=trainer.state.store_data)
        if trainer.state.data_report is not None:  # the quality report of what fit checked
            log_check(self.run, trainer.state.data_report)

    def on_batch_end(self, trainer: Trainer) -> None:
        assert self.run is not None
        self.run.log({"train_loss_step": trainer.state.loss}, step=trainer.state.step)

    def on_epoch_end(self, trainer: Trainer) -> None:
        assert self.run is not None
        values = {k: v for k, v in trainer.state.metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        values["epoch"] = trainer.state.epoch
        self.run.log(values, step=trainer.state.step)

    def on_fit_end(self, trainer: Trainer) -> None:
        assert self.run is not None
        for cb in trainer.callbacks:
            if isinstance(cb, Checkpoint) and cb.save_best and cb.best_path.is_file():
                self.run.log_artifact(cb.best_path, "checkpoints/best.pt")
                if not math.isinf(cb.best):
                    self.run.set_tags({"best_epoch": cb.best_epoch, f"best_{cb.monitor}": f"{cb.best:.6g}"})
                break
        if self._owned:
            self.run.finish("FINISHED")

    def on_exception(self, trainer: Trainer) -> None:
        if self._owned and self.run is not None and self.run.is_open:
            self.run.finish("KILLED" if isinstance(trainer.state.exception, KeyboardInterrupt) else "FAILED")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run.id if self.run is not None else ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_id = state.get("run_id") or None
