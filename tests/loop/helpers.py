"""What the loop's tests share: two populations of blobs (the champion's and the shifted traffic's), and a fault
they inject (the store's artifact root going away in the middle of a retrain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loopml import data
from loopml.train import Trainer
from loopml.train.callbacks import Callback

CLASSES = ["a", "b", "c"]
MEANS_A = np.random.default_rng(42).normal(scale=2.0, size=(3, 8))
MEANS_B = np.random.default_rng(43).normal(scale=2.0, size=(3, 8)) + 8.0  # another population, far from A


def population(n: int, means: np.ndarray, seed: int) -> data.Dataset:
    """``n`` rows of 8 features around ``means`` (one per class), seeded."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(means), n)
    x = means[y] + rng.normal(size=(n, means.shape[1]))
    return data.Dataset(x.astype(np.float32), y, class_names=CLASSES, name="blobs")


class BreakTheStore(Callback):
    """At the end of training, put a file where the artifact root was: every later write of files fails."""

    order = 90

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_fit_end(self, trainer: Trainer) -> None:
        self.root.rename(self.root.with_name("artifacts-away"))
        self.root.write_text("not a folder")
