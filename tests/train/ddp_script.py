"""Run by tests/train/test_distributed.py under ``torchrun --nproc_per_node=2``: a tiny MLP on digits.

Tracking goes to LOOPML_TRACKING_URI; checkpoints go to the folder given as the first argument.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from loopml.tracking import api
from loopml.train import Checkpoint, ProgressBar, Trainer

VAL_ROWS = 449  # odd: the two ranks' validation shards differ in length


def data() -> tuple[torch.Tensor, ...]:
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_val, y_tr, y_val = train_test_split(x, d.target, test_size=0.25, stratify=d.target, random_state=0)
    return tuple(torch.from_numpy(a) for a in (x_tr, y_tr.astype(np.int64), x_val[:VAL_ROWS],
                                               y_val[:VAL_ROWS].astype(np.int64)))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    x_tr, y_tr, x_val, y_val = data()
    net = model()
    trainer = Trainer(net, optimizer=torch.optim.Adam(net.parameters(), lr=3e-3), metrics=["accuracy", "f1"],
                      callbacks=[Checkpoint(out / "ck", monitor="val_accuracy", mode="max"), ProgressBar(plain=True)],
                      experiment="ddp", distributed=True)
    trainer.fit((x_tr, y_tr), val=(x_val, y_val), epochs=2, batch_size=32)
    api.close_all()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
