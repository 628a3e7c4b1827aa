"""A fit stopped after epoch k and resumed from its checkpoint takes exactly the same steps."""

from __future__ import annotations

from pathlib import Path

import torch

from loopml.train import Checkpoint, LRScheduler, Trainer, lambda_callback

from .conftest import mlp


def _trainer(ckpt_dir: Path, losses: list[float], seed_model: int) -> Trainer:
    model = mlp(seed=seed_model, dropout=0.2)  # dropout draws from torch's global RNG
    return Trainer(
        model,
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        metrics=["accuracy"],
        callbacks=[
            LRScheduler(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)),
            Checkpoint(ckpt_dir, monitor="val_loss"),
            lambda_callback(on_batch_end=lambda t: losses.append(t.state.loss)),
        ],
        seed=7,
        track=False,
    )


def test_resume_gives_the_same_per_step_losses(digits, tmp_path: Path) -> None:
    x_tr, y_tr, x_val, y_val = digits
    train, val = (x_tr[:600], y_tr[:600]), (x_val[:200], y_val[:200])

    straight: list[float] = []
    full = _trainer(tmp_path / "a", straight, seed_model=0)
    full.fit(train, val=val, epochs=4, batch_size=64)

    first: list[float] = []
    _trainer(tmp_path / "b", first, seed_model=0).fit(train, val=val, epochs=2, batch_size=64)
    # torch's global RNG moved on meanwhile; a new process would start from anywhere
    torch.manual_seed(12345)
    resumed: list[float] = []
    again = _trainer(tmp_path / "b", resumed, seed_model=99)  # other initial weights: the checkpoint replaces them
    again.fit(train, val=val, epochs=4, batch_size=64, resume_from=tmp_path / "b" / "last.pt")

    steps_per_epoch = len(straight) // 4
    assert first == straight[: 2 * steps_per_epoch]
    assert resumed == straight[2 * steps_per_epoch :]  # exact: atol=0
    assert again.state.step == full.state.step and again.state.epoch == 4
    assert again.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"]
    for key, tensor in full.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], tensor), key
    assert again.state.metrics["val_loss"] == full.state.metrics["val_loss"]
