"""Each callback does what it says: early stopping, checkpoints (atomic), clipping, schedulers, progress."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import pytest
import torch

from loopml.train import (
    Callback,
    Checkpoint,
    EarlyStopping,
    GradientClipping,
    LRScheduler,
    ProgressBar,
    Trainer,
    lambda_callback,
    load_checkpoint,
)
from loopml.train.checkpoint import atomic_save

from .conftest import mlp


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


class Feed(Callback):
    """Puts a scripted value into the epoch's metrics before the other callbacks read it."""

    order = -1

    def __init__(self, key: str, values: list[float]) -> None:
        self.key, self.values = key, values

    def on_epoch_end(self, trainer: Trainer) -> None:
        trainer.state.metrics[self.key] = self.values[trainer.state.epoch - 1]


@pytest.mark.parametrize(
    ("mode", "values", "patience", "stop_epoch"),
    [
        ("max", [0.5, 0.6, 0.55, 0.58, 0.6, 0.7, 0.8], 3, 5),  # 0.6 again is no improvement
        ("min", [3.0, 2.0, 1.0, 1.5, 0.9, 1.1, 1.2], 2, 7),
        ("min", [3.0, 2.0, 1.0, 0.5, 0.4, 0.3, 0.2], 1, None),  # always improving: runs all epochs
    ],
)
def test_early_stopping_stops_at_the_right_epoch(mode, values, patience, stop_epoch) -> None:
    es = EarlyStopping(monitor="val_score", mode=mode, patience=patience)
    trainer = Trainer(mlp(), callbacks=[es, Feed("val_score", values)], track=False)
    trainer.fit(_data(), epochs=len(values), batch_size=20)
    assert es.stopped_epoch == stop_epoch
    assert trainer.state.epoch == (stop_epoch or len(values))
    assert es.best == (max if mode == "max" else min)(values[: trainer.state.epoch])


def test_checkpoint_writes_best_and_last(tmp_path: Path) -> None:
    ck = Checkpoint(tmp_path / "ck", monitor="val_score", mode="max")
    values = [0.1, 0.5, 0.3, 0.2]
    trainer = Trainer(mlp(), callbacks=[ck, Feed("val_score", values)], track=False)
    trainer.fit(_data(), epochs=4, batch_size=20)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["best.pt", "last.pt"]
    best, last = load_checkpoint(ck.best_path), load_checkpoint(ck.last_path)
    assert best["trainer"]["epoch"] == 2 and best["metrics"]["val_score"] == 0.5
    assert last["trainer"]["epoch"] == 4 and last["trainer"]["step"] == 8
    assert ck.best_epoch == 2
    # the weights in last.pt are the trained model's; torch.load with weights_only=True reads it
    raw = torch.load(ck.last_path, weights_only=True)
    for key, tensor in trainer.model.state_dict().items():
        assert torch.equal(raw["model"][key], tensor)
    assert raw["model_class"] == "torch.nn.modules.container.Sequential"
    assert set(raw["rng"]) == {"torch", "numpy", "python", "loader"}
    # a fresh model loads the best weights without the training script
    fresh = mlp(seed=5)
    fresh.load_state_dict(best["model"])


def test_checkpoint_every_n_epochs(tmp_path: Path) -> None:
    ck = Checkpoint(tmp_path, monitor="train_loss", save_best=False, every=2)
    epochs_saved: list[int] = []
    trainer = Trainer(mlp(), callbacks=[ck, lambda_callback(
        on_epoch_end=lambda t: epochs_saved.append(load_checkpoint(ck.last_path)["trainer"]["epoch"])
        if ck.last_path.exists() else None)], track=False)
    trainer.fit(_data(), epochs=5, batch_size=20)
    assert not ck.best_path.exists()
    assert load_checkpoint(ck.last_path)["trainer"]["epoch"] == 4


class Unpicklable:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("cannot serialize this")


def test_atomic_save_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    atomic_save({"format": "old", "w": torch.ones(3)}, target)
    # serialization fails halfway through the write: the old file stays, no temp file is left
    with pytest.raises(RuntimeError, match="cannot serialize"):
        atomic_save({"w": torch.zeros(1000), "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True)["format"] == "old"
    assert os.listdir(tmp_path) == ["last.pt"]
    # the target name is taken by a folder: os.replace fails, nothing is left behind
    blocked = tmp_path / "blocked.pt"
    blocked.mkdir()
    with pytest.raises(OSError):
        atomic_save({"w": torch.ones(3)}, blocked)
    assert sorted(os.listdir(tmp_path)) == ["blocked.pt", "last.pt"] and not list(blocked.iterdir())


def test_checkpoint_failure_mid_fit_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    ck = Checkpoint(tmp_path, monitor="train_loss")

    class BreakSave(Callback):
        """From epoch 2 its state cannot be serialized: torch.save fails halfway through writing."""

        def __init__(self) -> None:
            self.epoch = 0

        def on_epoch_end(self, trainer: Trainer) -> None:
            self.epoch = trainer.state.epoch

        def state_dict(self) -> dict:
            return {"blob": torch.zeros(10_000), "bad": Unpicklable() if self.epoch >= 2 else 0}

    trainer = Trainer(mlp(), callbacks=[ck, BreakSave()], track=False)
    with pytest.raises(RuntimeError, match="cannot serialize"):
        trainer.fit(_data(), epochs=3, batch_size=20)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]
    assert load_checkpoint(ck.last_path)["trainer"]["epoch"] == 1


def test_gradient_clipping_bounds_the_grad_norm() -> None:
    clip = GradientClipping(0.05)
    before, after = [], []

    def measure(trainer: Trainer) -> None:
        before.append(clip.last_norm)
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        after.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer = Trainer(mlp(), callbacks=[clip, lambda_callback(on_backward_end=measure)], track=False)
    trainer.fit(_data(), epochs=2, batch_size=10)
    assert len(after) == 8
    assert max(before) > 0.05  # clipping had work to do
    assert max(after) <= 0.05 * (1 + 1e-5)
    with pytest.raises(ValueError, match=r"Argument max_norm should be a number > 0, got 0"):
        GradientClipping(0)


def test_lr_scheduler_changes_lr_and_puts_it_in_the_metrics() -> None:
    sched = LRScheduler(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    seen: list[float] = []
    trainer = Trainer(mlp(), optimizer=functools.partial(torch.optim.SGD, lr=0.1), callbacks=[
        sched, lambda_callback(on_epoch_end=lambda t: seen.append(t.state.metrics["lr"]))], track=False)
    trainer.fit(_data(), epochs=3, batch_size=20)
    assert sched.lrs == pytest.approx([0.05, 0.025, 0.0125])
    assert seen == sched.lrs
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_lr_scheduler_per_batch_and_plateau() -> None:
    per_batch = LRScheduler(lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (step + 1)),
                            step_on="batch")
    Trainer(mlp(), callbacks=[per_batch], track=False).fit(_data(), epochs=1, batch_size=10)
    assert per_batch.lrs == pytest.approx([1e-3 / k for k in (2, 3, 4, 5)])
    plateau = LRScheduler(lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.1),
                          monitor="val_score")
    trainer = Trainer(mlp(), callbacks=[plateau, Feed("val_score", [1.0, 2.0, 3.0])], track=False)
    trainer.fit(_data(), epochs=3, batch_size=20)
    assert plateau.lrs == pytest.approx([1e-3, 1e-4, 1e-5])
    with pytest.raises(ValueError, match=r"Argument step_on should be 'epoch' or 'batch'"):
        LRScheduler(lambda opt: None, step_on="step")
    other = torch.optim.SGD(mlp().parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"Argument scheduler should wrap the trainer's optimizer"):
        Trainer(mlp(), callbacks=[LRScheduler(torch.optim.lr_scheduler.StepLR(other, 1))], track=False)


def test_progress_bar_prints_plain_lines_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    Trainer(mlp(), metrics=["accuracy"], callbacks=[ProgressBar(file=out)], track=False).fit(
        _data(), val=_data(), epochs=2, batch_size=20)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("epoch 2/2  train_loss ") and "val_accuracy" in lines[1]


def test_progress_bar_rich_in_a_terminal() -> None:
    out = io.StringIO()
    Trainer(mlp(), callbacks=[ProgressBar(file=out, plain=False)], track=False).fit(_data(), epochs=2, batch_size=20)
    assert "epoch 2/2" in out.getvalue()
