"""Small importable models for the registry tests (a fresh interpreter can import them as tests.models.nets)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, n_in: int = 64, hidden: int = 16, n_out: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Like the digits CNN: conv -> relu -> pool -> linear on 1x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def export_example(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The export tests' two models in eval mode with an example batch, seeded: ``"mlp"`` or ``"cnn"``."""
    torch.manual_seed(0)
    if name == "mlp":
        # batch 1: the exporters repeat it to 2 rows so that the batch dim stays dynamic
        return MLP(hidden=32).eval(), torch.rand(1, 64) * 16
    return CNN().eval(), torch.rand(8, 1, 8, 8) * 16
