"""Small reference networks that ship with loopml: the demo's digits CNN and a tabular MLP.

They live in the package (not in a script) so that their class path is
importable from any process, and they record their constructor arguments
(:func:`~loopml.models.rebuild.keep_init_args`): a version registered from them
keeps the ``torch`` format (state dict + ``model_spec``) without ``init_args=``
and can be fine-tuned again, e.g. by quantization-aware training
(``loopml quantize ... --method tqt``).

>>> from loopml.models.nets import DigitsCNN
>>> model = DigitsCNN(channels=16)          # 1x8x8 images -> 10 logits
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.preprocess import Preprocessor
from ..errors import ArgumentError
from .rebuild import keep_init_args

__all__ = ["MLP", "DigitsCNN"]


@keep_init_args
class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digit images (scikit-learn's digits)."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 16, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))  # nn.Module.__call__ is typed Any
        return out


@keep_init_args
class MLP(nn.Module):
    """``n_in -> hidden -> ... -> n_out`` with ReLU between the layers (``hidden`` may list several widths).

    ``preprocessing``: a fitted :class:`~loopml.data.Preprocessor`'s ``to_dict()``.
    The MLP then takes raw rows and applies that Preprocessor first (``n_in`` is
    its ``n_features_out``); unlike ``pre.then(mlp)``, the model stays one
    rebuildable class, so a registered version keeps its ``torch`` format.

    >>> import numpy as np
    >>> from loopml.data import Preprocessor
    >>> pre = Preprocessor().fit(np.array([[1.0, 10.0], [3.0, 30.0]]))
    >>> model = MLP(pre.n_features_out, 2, hidden=[8], preprocessing=pre.to_dict())
    >>> model(torch.tensor([[2.0, float("nan")]])).shape
    torch.Size([1, 2])
    """

    def __init__(self, n_in: int, n_out: int, hidden: int | list[int] = 64,
                 preprocessing: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.pre: nn.Module | None = None
        if preprocessing is not None:
            self.pre = Preprocessor.from_dict(preprocessing)
            if n_in != self.pre.n_features_out:
                raise ArgumentError(
                    f"Argument n_in should be the Preprocessor's output width ({self.pre.n_features_out} columns); "
                    f"got {n_in}. Pass MLP(pre.n_features_out, ..., preprocessing=pre.to_dict())"
                )
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        layers: list[nn.Module] = []
        prev = n_in
        for w in widths:
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        layers.append(nn.Linear(prev, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x if self.pre is None else self.pre(x))  # nn.Module.__call__ is typed Any
        return out
