"""Models for the federated tests: importable classes, so that the torch format and the deployment engine rebuild them."""

from __future__ import annotations

import torch
from torch import nn

from loopml.models import keep_init_args


@keep_init_args
class TinyNet(nn.Module):
    """An MLP over flattened inputs (digits' 1x8x8 images or a table's columns)."""

    def __init__(self, n_in: int = 64, n_out: int = 10, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
