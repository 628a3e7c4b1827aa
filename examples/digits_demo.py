"""The loopml demo: train a small CNN on scikit-learn's digits while logging a run.

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

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import loopml

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


def load() -> tuple[torch.Tensor, ...]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8 in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SEED)
    return tuple(torch.from_numpy(a) for a in (x_tr, y_tr, x_val, y_val))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
    model.train()
    return loss, acc


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    console = Console(soft_wrap=True)
    x_tr, y_tr, x_val, y_val = load()
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    params = {
        "model": "DigitsCNN",
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer": "Adam",
        "lr": LR,
        "batch_size": BATCH_SIZE,
        "epochs": EPOCHS,
        "seed": SEED,
        "train_rows": len(x_tr),
        "val_rows": len(x_val),
    }
    started = time.perf_counter()
    with loopml.start_run(experiment="digits-demo", params=params, tags={"source": "examples/digits_demo.py"}) as run:
        console.print(f"run [bold]{run.id}[/bold] in experiment digits-demo, tracking at {loopml.get_tracking_uri()}")
        step = 0
        steps_per_epoch = (len(x_tr) + BATCH_SIZE - 1) // BATCH_SIZE
        columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task("training", total=EPOCHS * steps_per_epoch, status="")
            for epoch in range(EPOCHS):
                perm = torch.randperm(len(x_tr))
                for i in range(0, len(x_tr), BATCH_SIZE):
                    idx = perm[i : i + BATCH_SIZE]
                    loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    run.log({"train_loss": loss.item()}, step=step)
                    step += 1
                    progress.advance(task)
                val_loss, val_acc = accuracy(model, x_val, y_val)
                run.log({"val_loss": val_loss, "val_acc": val_acc, "epoch": epoch}, step=step)
                progress.update(task, status=f"epoch {epoch + 1}/{EPOCHS} val_acc {val_acc:.3f}")
                if not console.is_terminal:
                    console.print(f"epoch {epoch + 1}/{EPOCHS}  val_loss {val_loss:.4f}  val_acc {val_acc:.4f}")
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "model.pt"
            torch.save(model.state_dict(), weights)
            run.log_artifact(weights, "model/state_dict.pt")
        run.set_tags({"val_acc": f"{val_acc:.4f}"})

    run.refresh()
    console.print(
        f"\n[bold green]done[/bold green] in {time.perf_counter() - started:.1f}s: run {run.id} {run.status}, "
        f"val_acc {run.metrics['val_acc']:.4f}, {len(run.history('train_loss').steps)} train_loss points"
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
