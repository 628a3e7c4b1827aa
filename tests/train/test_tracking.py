"""Tracking: a fit leaves its params, metrics, learning rate, throughput and best checkpoint in the store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import loopml
from loopml.train import Checkpoint, LRScheduler, Trainer, lambda_callback

from .conftest import mlp


def test_fit_logs_a_complete_run(digits, sqlite_store: str, tmp_path: Path) -> None:
    x_tr, y_tr, x_val, y_val = digits
    model = mlp()
    trainer = Trainer(
        model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9),
        metrics=["accuracy", "f1"],
        callbacks=[Checkpoint(tmp_path / "ck", monitor="val_accuracy", mode="max"),
                   LRScheduler(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))],
        log_every=5,
        experiment="digits-train",
    )
    trainer.fit((x_tr, y_tr), val=(x_val, y_val), epochs=3, batch_size=64)
    runs = loopml.runs("digits-train")
    assert len(runs) == 1 and runs.loc[0, "status"] == "FINISHED"
    run = loopml.get_run(runs.loc[0, "run_id"])
    params = run.params
    assert params["optimizer"] == "SGD" and params["lr"] == "0.2" and params["optimizer.momentum"] == "0.9"
    assert params["batch_size"] == "64" and params["epochs"] == "3"
    assert params["model"] == "Sequential" and params["model_class"] == "torch.nn.modules.container.Sequential"
    assert params["parameters"] == str(sum(p.numel() for p in model.parameters()))
    assert params["loss"] == "CrossEntropyLoss" and params["mode"] == "eager"

    steps = trainer.state.step
    loss_steps = run.history("train_loss_step")
    assert list(loss_steps.steps) == list(range(5, steps + 1, 5))
    for key in ("train_loss", "train_accuracy", "train_f1", "val_loss", "val_accuracy", "val_f1",
                "lr", "samples_per_s", "epoch"):
        h = run.history(key)
        assert len(h.values) == 3, key
    assert list(run.history("epoch").values) == [1, 2, 3]
    assert run.history("lr").values.tolist() == pytest.approx([0.1, 0.05, 0.025])  # after each scheduler step
    assert (run.history("samples_per_s").values > 0).all()
    assert run.history("val_accuracy").values[-1] > 0.85

    assert [a.path for a in run.artifacts()] == ["checkpoints/best.pt"]
    got = run.download_artifact("checkpoints/best.pt", tmp_path / "dl")
    ckpt = torch.load(got, weights_only=True)
    assert ckpt["trainer"]["epoch"] == int(run.tags["best_epoch"])


def test_logs_to_the_active_run_and_marks_an_owned_run_failed(sqlite_store: str) -> None:
    x, y = torch.randn(20, 64), torch.randint(0, 10, (20,))
    with loopml.start_run(experiment="mine") as outer:
        Trainer(mlp()).fit((x, y), epochs=2, batch_size=10)
        assert outer.is_open  # the trainer does not finish a run it did not open
    outer.refresh()
    assert outer.params["epochs"] == "2" and outer.metrics["epoch"] == 2

    def fail(trainer: Trainer) -> None:
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        Trainer(mlp(), experiment="failing", callbacks=[lambda_callback(on_epoch_end=fail)]).fit((x, y), epochs=2)
    failed = loopml.runs("failing")
    assert failed.loc[0, "status"] == "FAILED"


def test_resumed_fit_continues_the_same_run(sqlite_store: str, tmp_path: Path) -> None:
    x, y = torch.randn(20, 64), torch.randint(0, 10, (20,))
    Trainer(mlp(), experiment="resume", callbacks=[Checkpoint(tmp_path, monitor="train_loss")]).fit(
        (x, y), epochs=2, batch_size=10)
    Trainer(mlp(), experiment="resume", callbacks=[Checkpoint(tmp_path, monitor="train_loss")]).fit(
        (x, y), epochs=4, batch_size=10, resume_from=tmp_path / "last.pt")
    runs = loopml.runs("resume")
    assert len(runs) == 1
    run = loopml.get_run(runs.loc[0, "run_id"])
    assert list(run.history("epoch").values) == [1, 2, 3, 4]
    assert run.params["epochs"] == "2"  # params are write-once: the first fit's value stays


def test_loopml_datasets_are_linked_to_the_run(sqlite_store: str) -> None:
    from loopml import data
    g = torch.Generator().manual_seed(0)
    train = data.from_arrays(torch.randn(40, 64, generator=g).numpy(), (torch.arange(40) % 10).numpy(),
                             task="classification", name="train-part")
    Trainer(mlp(), experiment="lineage").fit(train, epochs=1, batch_size=20)
    run = loopml.get_run(loopml.runs("lineage").loc[0, "run_id"])
    assert run.params["train_fingerprint"] == train.fingerprint
    assert run.tags["dataset.train"] == train.fingerprint
    # the quality report fit checked is logged with the run
    assert run.tags["data_check"].startswith("ok")
    assert "data_check.json" in [a.path for a in run.artifacts()]


def test_per_group_learning_rates_are_logged(sqlite_store: str) -> None:
    from loopml.train import param_groups

    model = mlp()
    opt = torch.optim.Adam(param_groups(model, {"0": 1e-4}, default_lr=1e-2))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 64, generator=g), torch.arange(40) % 10
    Trainer(model, optimizer=opt, experiment="groups").fit((x, y), epochs=1, batch_size=20)

    run = loopml.get_run(loopml.runs("groups").loc[0, "run_id"])
    assert run.params["param_groups"] == "2"
    assert (run.params["lr_0"], run.params["lr_1"]) == ("0.0001", "0.01")
    assert (run.metrics["lr_0"], run.metrics["lr_1"]) == (1e-4, 1e-2)
