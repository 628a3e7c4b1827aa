"""A fault the loop's tests inject: the store's artifact root going away in the middle of a retrain."""

from __future__ import annotations

from pathlib import Path

from loopml.train import Trainer
from loopml.train.callbacks import Callback


class BreakTheStore(Callback):
    """At the end of training, put a file where the artifact root was: every later write of files fails."""

    order = 90

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_fit_end(self, trainer: Trainer) -> None:
        self.root.rename(self.root.with_name("artifacts-away"))
        self.root.write_text("not a folder")
