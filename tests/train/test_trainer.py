"""The loop: it learns, fires its events in order, takes every kind of data, rejects bad arguments."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from loopml.errors import LoopMLError
from loopml.train import EVENTS, Callback, EarlyStopping, Trainer, lambda_callback

from .conftest import mlp


def test_mlp_learns_digits_above_90_percent(digits) -> None:
    x_tr, y_tr, x_val, y_val = digits
    model = mlp(hidden=64)
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), metrics=["accuracy"], track=False)
    trainer.fit((x_tr, y_tr), val=(x_val, y_val), epochs=6, batch_size=64)
    assert trainer.state.epoch == 6
    assert trainer.state.metrics["val_accuracy"] > 0.9
    assert trainer.state.metrics["train_loss"] < 1.0
    result = trainer.evaluate((x_val, y_val))
    assert result["accuracy"] == pytest.approx(trainer.state.metrics["val_accuracy"])
    logits = trainer.predict(x_val)
    assert logits.shape == (len(x_val), 10)
    assert (logits.argmax(1) == y_val).float().mean().item() == pytest.approx(result["accuracy"])


class Recorder(Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []
        for event in EVENTS:
            setattr(self, f"on_{event}", functools.partial(self._record, event))

    def _record(self, event: str, trainer: Trainer) -> None:
        self.seen.append((event, trainer.state.epoch, trainer.state.step))


def test_events_fire_in_order_with_every_filter() -> None:
    x, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    rec = Recorder()
    trainer = Trainer(mlp(), callbacks=[rec], track=False)
    every3: list[int] = []
    trainer.add_event_handler("batch_end", lambda t: every3.append(t.state.step), every=3)
    epochs2: list[int] = []
    trainer.on("epoch_end", every=2)(lambda t: epochs2.append(t.state.epoch))
    trainer.fit((x, y), val=(x, y), epochs=4, batch_size=10)
    events = [e for e, _, _ in rec.seen]
    assert events[0] == "fit_start" and events[-1] == "fit_end"
    per_epoch = ["epoch_start"] + ["backward_end", "batch_end"] * 4 + ["eval_end", "epoch_end"]
    assert events[1:-1] == per_epoch * 4
    assert every3 == [3, 6, 9, 12, 15]
    assert epochs2 == [2, 4]
    assert "exception" not in events


def test_exception_event_fires_and_reraises() -> None:
    seen: list[BaseException | None] = []

    def boom(trainer: Trainer) -> None:
        if trainer.state.step == 2:
            raise RuntimeError("boom")

    trainer = Trainer(mlp(), track=False, callbacks=[
        lambda_callback(on_batch_end=boom, on_exception=lambda t: seen.append(t.state.exception))])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit((torch.randn(20, 64), torch.randint(0, 10, (20,))), epochs=1, batch_size=5)
    assert len(seen) == 1 and isinstance(seen[0], RuntimeError)


class PairDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def test_accepts_tuple_dataset_and_dataloader_alike() -> None:
    x, y = torch.randn(30, 64), torch.randint(0, 10, (30,))
    losses = {}
    for kind, data in {
        "tuple": (x, y),
        "numpy": (x.numpy(), y.numpy()),
        "dataset": PairDataset(x, y),
        "loader": DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(0)),
    }.items():
        trainer = Trainer(mlp(), track=False)
        trainer.fit(data, epochs=2, batch_size=10)
        losses[kind] = trainer.state.metrics["train_loss"]
    # the same seed, the same shuffling generator: the same training
    assert losses["tuple"] == losses["numpy"] == losses["dataset"] == losses["loader"]


def test_regression_with_mse_and_optimizer_factory() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    model = nn.Linear(3, 1)
    trainer = Trainer(model, optimizer=functools.partial(torch.optim.SGD, lr=0.1),
                      loss=lambda out, target: nn.functional.mse_loss(out.squeeze(1), target),
                      metrics=["mae", "rmse", "r2"], track=False)
    trainer.fit((x, y), val=(x, y), epochs=20, batch_size=20)
    assert trainer.state.metrics["val_r2"] > 0.999
    assert trainer.state.metrics["val_rmse"] < 0.05


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    # a loss that never improves after the first epoch: stop after 1 + patience epochs
    es = EarlyStopping(monitor="val_loss", patience=2)
    # lr 0: no learning, val_loss is the same every epoch
    trainer = Trainer(mlp(), optimizer=functools.partial(torch.optim.SGD, lr=0.0), track=False, callbacks=[es])
    x, y = torch.randn(20, 64), torch.randint(0, 10, (20,))
    trainer.fit((x, y), val=(x, y), epochs=10, batch_size=10)
    assert trainer.state.epoch == 3 and es.stopped_epoch == 3
    assert es.state_dict()["wait"] == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "jit"}, ValueError, r"Argument mode should be 'eager' or 'compile', got 'jit'"),
        ({"seed": -1}, ValueError, r"Argument seed should be an integer >= 0"),
        ({"log_every": 0}, ValueError, r"Argument log_every should be an integer >= 1"),
        ({"optimizer": "adam"}, TypeError, r"Argument optimizer should be a torch.optim.Optimizer .*e\.g\. Trainer\("),
        ({"loss": 3}, TypeError, r"Argument loss should be callable"),
        ({"callbacks": [print]}, TypeError, r"Argument callbacks should be a list of loopml.train callbacks"),
        ({"metrics": ["accuracy", "auc"]}, ValueError, r"Argument metrics should hold Metric instances or names"),
        ({"device": "gpu0"}, ValueError, r"Argument device should be a torch device"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        Trainer(mlp(), track=False, **kwargs)


def test_bad_model_and_fit_arguments() -> None:
    with pytest.raises(TypeError, match=r"Argument model should be a torch.nn.Module, got function; e\.g\."):
        Trainer(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"positional"):
        Trainer(mlp(), None)  # type: ignore[misc]
    trainer = Trainer(mlp(), track=False)
    x, y = torch.randn(10, 64), torch.randint(0, 10, (10,))
    with pytest.raises(ValueError, match=r"Argument epochs should be an integer >= 1, got 0"):
        trainer.fit((x, y), epochs=0)
    with pytest.raises(ValueError, match=r"Argument batch_size should be an integer >= 1, got 2.5"):
        trainer.fit((x, y), epochs=1, batch_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Argument train should be a torch Dataset .* got dict; e\.g\. trainer.fit"):
        trainer.fit({"x": x}, epochs=1)
    with pytest.raises(ValueError, match=r"Argument val should have as many targets as inputs, got 10 and 9 rows"):
        trainer.fit((x, y), val=(x, y[:9]), epochs=1)
    with pytest.raises(ValueError, match=r"Argument resume_from should be a checkpoint file"):
        trainer.fit((x, y), epochs=1, resume_from="/nonexistent/last.pt")
    with pytest.raises(ValueError, match=r"Argument event should be one of"):
        trainer.add_event_handler("step_end", print)
    with pytest.raises(ValueError, match=r"Argument monitor of EarlyStopping should name a metric of the epoch "
                                         r"\(fit\(\) got no val data\): got 'val_loss'"):
        Trainer(mlp(), track=False, callbacks=[EarlyStopping()]).fit((x, y), epochs=1)


def test_loopml_datasets_are_checked_before_training() -> None:
    """A loopml.data.Dataset goes through loopml.data.check (train, val, leakage); errors stop the fit."""
    from loopml import data
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 64, generator=g), torch.arange(40) % 10
    bad_x = x.clone()
    bad_x[3, 5] = float("nan")
    bad = data.from_arrays(bad_x.numpy(), y.numpy(), task="classification")
    trainer = Trainer(mlp(), track=False)
    with pytest.raises(LoopMLError, match=r"(?s)missing_values.*check_data=False"):
        trainer.fit(bad, epochs=1)
    good = data.from_arrays(x.numpy(), y.numpy(), task="classification")
    with pytest.raises(LoopMLError, match=r"leakage"):  # the same rows in train and val
        trainer.fit(good, val=good, epochs=1)
    trainer.fit(good, val=good, epochs=1, check_data=False)
    assert trainer.state.fingerprints == {"train": good.fingerprint, "val": good.fingerprint}


def test_evaluate_with_a_cost_matrix_on_a_binary_problem() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = (x[:, 0] + 0.5 * torch.randn(400, generator=g) > 0.8).long()  # imbalanced: ~25% positives
    model = nn.Linear(5, 2)
    trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=0.05), metrics=["accuracy", "roc_auc"],
                      track=False)
    trainer.fit((x, y), epochs=15, batch_size=50)
    result = trainer.evaluate((x, y), cost_matrix=[[0, 1], [10, 0]])
    assert result["roc_auc"] > 0.9
    assert result["expected_cost_at_best_threshold"] <= result["expected_cost"]
    assert 0 < result["best_threshold"] < 0.5  # a missed positive costs 10: flag more of them
    p = torch.softmax(trainer.predict(x), 1)[:, 1]
    flagged = (p >= result["best_threshold"]).long()
    cost = torch.tensor([[0.0, 1.0], [10.0, 0.0]])[y, flagged].mean().item()
    assert cost == pytest.approx(result["expected_cost_at_best_threshold"], abs=1e-6)
