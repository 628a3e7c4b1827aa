"""ProgressBar: a Rich bar in a terminal, one plain line per epoch elsewhere (pipes, CI=true)."""

from __future__ import annotations

import os
import sys
from typing import IO, TYPE_CHECKING, Any

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["ProgressBar"]


def _summary(trainer: Trainer) -> str:
    s = trainer.state
    parts = [f"epoch {s.epoch}/{s.epochs}"]
    for key, value in s.metrics.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
    return "  ".join(parts)


class ProgressBar(Callback):
    """Show training progress. ``plain=None`` picks plain lines when ``file`` is not a terminal or CI=true.

    >>> import sys
    >>> from loopml.train import Trainer
    >>> trainer = Trainer(model, callbacks=[ProgressBar(file=sys.stdout)]).fit((x_train, y_train), epochs=1)
    epoch 1/1 ...
    """

    order = 30
    rank_zero_only = True

    def __init__(self, *, file: IO[str] | None = None, plain: bool | None = None) -> None:
        self.file = file
        self.plain = plain
        self._progress: Any = None
        self._task: Any = None

    def _is_plain(self) -> bool:
        if self.plain is not None:
            return self.plain
        stream = self.file or sys.stdout
        ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        return ci or not (hasattr(stream, "isatty") and stream.isatty())

    def on_fit_start(self, trainer: Trainer) -> None:
        if self._is_plain():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(file=self.file) if self.file is not None else Console()
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
        )
        s = trainer.state
        total = s.batches * (s.epochs - s.epoch) if s.batches else None
        self._task = self._progress.add_task("training", total=total, status="")
        self._progress.start()

    def on_batch_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, status=f"loss {trainer.state.loss:.4f}")

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.console.print(_summary(trainer))
        else:
            print(_summary(trainer), file=self.file or sys.stdout, flush=True)

    def _stop(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    on_fit_end = _stop
    on_exception = _stop
