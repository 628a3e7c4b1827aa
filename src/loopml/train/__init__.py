"""Training: a small loop (:class:`Trainer`) and callbacks that receive it.

>>> from pathlib import Path
>>> from loopml.train import Trainer, EarlyStopping, Checkpoint
>>> trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), metrics=["accuracy"],
...                   callbacks=[EarlyStopping(patience=3), Checkpoint("ckpt")])
>>> trainer = trainer.fit((x_train, y_train), val=(x_val, y_val), epochs=2, batch_size=64)
>>> sorted(p.name for p in Path("ckpt").iterdir())
[...]

See docs/training.md.
"""

from __future__ import annotations

from .autolog import Tracking
from .callbacks import (
    EVENTS,
    Callback,
    Checkpoint,
    EarlyStopping,
    GradientClipping,
    LRScheduler,
    lambda_callback,
)
from .checkpoint import load_checkpoint
from .metrics import (
    F1,
    MAE,
    R2,
    RMSE,
    ROCAUC,
    Accuracy,
    ConfusionMatrix,
    Metric,
    Precision,
    Recall,
    expected_cost,
)
from .progress import ProgressBar
from .trainer import State, Trainer
from .transfer import (
    LoadReport,
    freeze,
    load_weights,
    param_groups,
    trainable_parameters,
    unfreeze,
)

__all__ = [
    "EVENTS",
    "F1",
    "MAE",
    "R2",
    "RMSE",
    "ROCAUC",
    "Accuracy",
    "Callback",
    "Checkpoint",
    "ConfusionMatrix",
    "EarlyStopping",
    "GradientClipping",
    "LRScheduler",
    "LoadReport",
    "Metric",
    "Precision",
    "ProgressBar",
    "Recall",
    "State",
    "Tracking",
    "Trainer",
    "expected_cost",
    "freeze",
    "lambda_callback",
    "load_checkpoint",
    "load_weights",
    "param_groups",
    "trainable_parameters",
    "unfreeze",
]
