"""The two benchmark models for the peer servers, without loopml installed.

The classes mirror ``loopml.models.nets.MLP(64, 10, [256, 256])`` and
``loopml.models.nets.DigitsCNN()`` module for module, so the state dicts that
benchmarks/serving.py saves load here unchanged and every server runs the same
weights. Peer request: ``{"input": row}`` (64 floats, or 1x8x8 nested lists for
the CNN); answer: ``{"output": [10 floats]}``.
"""

import torch
from torch import nn

SHAPES = {"mlp": (-1, 64), "digits": (-1, 1, 8, 8)}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


class DigitsCNN(nn.Module):
    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 16, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x))


def load(kind: str, state: str, threads: int = 1) -> nn.Module:
    """The model ``kind`` ("mlp" or "digits") with the weights in ``state``, eval mode, warmed up."""
    torch.set_num_threads(threads)
    m = MLP() if kind == "mlp" else DigitsCNN()
    m.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
    m.eval()
    with torch.inference_mode():
        m(torch.zeros(1, *SHAPES[kind][1:]))
        m(torch.zeros(32, *SHAPES[kind][1:]))
    return m


def predict_rows(model: nn.Module, kind: str, rows) -> list:
    """rows: a list of rows -> a list of 10-float lists."""
    with torch.inference_mode():
        return model(torch.tensor(rows, dtype=torch.float32).reshape(SHAPES[kind])).tolist()
