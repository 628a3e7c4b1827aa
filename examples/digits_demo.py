"""The loopml demo: check and split scikit-learn's digits, train a small CNN with the Trainer, track it.

Run it with `make demo` (creates .venv, installs torch==2.13.0 and loopml), or
`python examples/digits_demo.py` inside that environment. Everything lands in
./.loopml (or LOOPML_HOME / LOOPML_TRACKING_URI).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from rich.console import Console
from torch import nn

import loopml
from loopml import data
from loopml.train import Checkpoint, EarlyStopping, ProgressBar, Trainer

EPOCHS = int(os.environ.get("LOOPML_DEMO_EPOCHS", "8"))
BATCH_SIZE = 64
LR = 3e-3
SEED = 0


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digit images."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * channels * 16, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    console = Console(soft_wrap=True)
    started = time.perf_counter()

    digits = data.load("digits")  # 1,797 images of 1 x 8 x 8, 10 classes
    parts = data.split(digits, val=0.15, test=0.15, stratify=True, seed=SEED)
    report = data.check(parts)  # missing values, duplicates, conflicting labels, imbalance, leakage between parts
    console.print(report)
    report.raise_if_errors(override_hint="fix the data, or pass check_data=False to Trainer.fit")

    model = DigitsCNN()
    with loopml.start_run(experiment="digits-demo", tags={"source": "examples/digits_demo.py"}) as run:
        console.print(f"run [bold]{run.id}[/bold] in experiment digits-demo, tracking at {loopml.get_tracking_uri()}")
        data.log_check(run, report, name="data_check_split.json")  # all three parts; fit logs its train/val check
        data.log_dataset(run, parts.test, role="test")  # train and val are linked by the Trainer
        with tempfile.TemporaryDirectory() as ckpt:
            trainer = Trainer(
                model,
                optimizer=torch.optim.Adam(model.parameters(), lr=LR),
                metrics=["accuracy"],
                callbacks=[ProgressBar(), Checkpoint(ckpt, monitor="val_accuracy", mode="max"),
                           EarlyStopping(monitor="val_loss", patience=3)],
                seed=SEED,
            )
            trainer.fit(parts.train, val=parts.val, epochs=EPOCHS, batch_size=BATCH_SIZE)
        test = trainer.evaluate(parts.test)
        run.log({f"test_{k}": v for k, v in test.items() if isinstance(v, float)})

    run.refresh()
    console.print(
        f"\n[bold green]done[/bold green] in {time.perf_counter() - started:.1f}s: run {run.id} {run.status}, "
        f"val_accuracy {run.metrics['val_accuracy']:.4f}, test_accuracy {run.metrics['test_accuracy']:.4f}"
    )
    home = Path(os.environ.get("LOOPML_HOME", ".loopml"))
    console.print("\nWhere to look:")
    console.print(f"  store      {loopml.get_tracking_uri()}")
    console.print(f"  artifacts  {home / 'artifacts' / run.id}")
    console.print(f"  this run   .venv/bin/loopml runs show {run.id}")
    console.print("  all runs   .venv/bin/loopml runs list --experiment digits-demo")
    console.print("  the UI/API .venv/bin/loopml server   then open http://127.0.0.1:5000/docs")


if __name__ == "__main__":
    main()
