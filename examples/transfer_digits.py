"""Transfer learning on scikit-learn's digits: pretrain on 0-4, fine-tune on 5-9 with 20 labels per class.

1. pretrain a small CNN (conv ``features`` + a ``head``) on digits 0-4 with the
   Trainer, keeping the best checkpoint;
2. fine-tune: a new CNN takes the checkpoint's ``features`` (``load_weights``,
   head excluded) and trains a new 5-class head on digits 5-9 (labels 5..9
   remapped to 0..4) from 20 labelled examples per class, the features at a
   low learning rate (``param_groups``) or frozen (``--freeze``);
3. scratch: the same CNN from random weights on the same 100 examples, for
   the same epochs, with the head's learning rate everywhere;
4. both are evaluated on every other 5-9 digit (about 800); the margin is
   fine-tuned accuracy minus scratch accuracy.

    python examples/transfer_digits.py                 # seed 0
    python examples/transfer_digits.py --seed 1 --freeze

Runs are logged to experiment "transfer-digits" (in ./.loopml, or LOOPML_HOME /
LOOPML_TRACKING_URI); ``--no-track`` skips that. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from torch import nn

import loopml
from loopml.data import Dataset, load, split
from loopml.models.nets import DigitsCNN  # features (conv) + head (classifier)
from loopml.train import Checkpoint, Trainer, freeze, load_weights, param_groups

EXPERIMENT = "transfer-digits"


@dataclass(frozen=True)
class Config:
    seed: int = 0
    shots: int = 20  # labelled examples per class of 5-9
    pretrain_epochs: int = 15
    finetune_epochs: int = 10
    batch_size: int = 20
    pretrain_lr: float = 3e-3
    head_lr: float = 3e-3  # the new head; scratch trains everything at this rate
    features_lr: float = 1e-4  # the pretrained features while fine-tuning
    freeze: bool = False  # freeze the features instead of a low learning rate
    track: bool = True


@dataclass(frozen=True)
class Result:
    pretrain_accuracy: float  # on held-out digits 0-4
    finetuned_accuracy: float  # on the 5-9 digits not used for training
    scratch_accuracy: float
    test_rows: int

    @property
    def margin(self) -> float:
        return self.finetuned_accuracy - self.scratch_accuracy


def digit_tasks(seed: int, shots: int) -> tuple[Dataset, Dataset, Dataset]:
    """Digits 0-4 (pretraining); ``shots`` per class of 5-9 (labels 0..4); the other 5-9 digits (test)."""
    ds = load("digits")
    y = ds.y.numpy()
    old = ds.subset(np.flatnonzero(y < 5), name="digits-0-4")
    old = Dataset(old.x, old.y, class_names=[str(c) for c in range(5)], name="digits-0-4", source=ds.source)
    rng = np.random.default_rng(seed)
    few, rest = [], []
    for c in range(5, 10):
        rows = rng.permutation(np.flatnonzero(y == c))
        few.append(rows[:shots])
        rest.append(rows[shots:])
    names = [str(c) for c in range(5, 10)]

    def new_task(rows: np.ndarray, name: str) -> Dataset:
        rows = np.sort(rows)
        return Dataset(ds.x[rows], ds.y[rows] - 5, class_names=names, name=name, source=ds.source)

    return old, new_task(np.concatenate(few), f"digits-5-9-{shots}-shot"), new_task(np.concatenate(rest), "digits-5-9-test")


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer, train: Dataset, test: Dataset, cfg: Config,
         *, epochs: int, name: str, tags: dict[str, str], val: Dataset | None = None,
         callbacks: list[Checkpoint] | None = None) -> float:
    """Train with the Trainer (logged as a run named ``name``) and return the test accuracy."""
    trainer = Trainer(model, optimizer=optimizer, metrics=["accuracy"], callbacks=callbacks or [], seed=cfg.seed,
                      track=cfg.track, experiment=EXPERIMENT)
    if not cfg.track:
        trainer.fit(train, val=val, epochs=epochs, batch_size=cfg.batch_size)
        return float(trainer.evaluate(test)["accuracy"])
    params = {"shots": cfg.shots, "head_lr": cfg.head_lr, "features_lr": cfg.features_lr, "freeze": cfg.freeze}
    tags = {"source": "examples/transfer_digits.py", **tags}
    with loopml.start_run(experiment=EXPERIMENT, name=name, params=params, tags=tags) as run:
        trainer.fit(train, val=val, epochs=epochs, batch_size=cfg.batch_size)
        accuracy = float(trainer.evaluate(test)["accuracy"])
        run.log({"test_accuracy": accuracy}, step=trainer.state.step)
    return accuracy


def run_transfer(cfg: Config = Config(), workdir: str | os.PathLike[str] | None = None) -> Result:
    """Pretrain on 0-4, then fine-tune and train from scratch on ``cfg.shots`` per class of 5-9."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="transfer-digits-") as tmp:
        ckpt_dir = Path(workdir or tmp) / "pretrain"
        old, few, test = digit_tasks(cfg.seed, cfg.shots)
        parts = split(old, val=0.15, test=0.0, seed=cfg.seed)
        assert parts.val is not None  # val=0.15 makes one

        torch.manual_seed(cfg.seed)
        pretrained = DigitsCNN(classes=5)
        ckpt = Checkpoint(ckpt_dir, monitor="val_accuracy", mode="max", save_last=False)
        pre_acc = _fit(pretrained, torch.optim.Adam(pretrained.parameters(), lr=cfg.pretrain_lr), parts.train,
                       parts.val, cfg, val=parts.val, epochs=cfg.pretrain_epochs, callbacks=[ckpt],
                       name="pretrain-0-4", tags={"role": "pretrain"})

        torch.manual_seed(cfg.seed + 1)
        finetuned = DigitsCNN(classes=5)
        load_weights(finetuned, ckpt.best_path, exclude=("head.",), strict=True)
        if cfg.freeze:
            freeze(finetuned, "features")
            groups = param_groups(finetuned, {"head": cfg.head_lr})
        else:
            groups = param_groups(finetuned, {"features": cfg.features_lr, "head": cfg.head_lr})
        fine_acc = _fit(finetuned, torch.optim.Adam(groups), few, test, cfg, epochs=cfg.finetune_epochs,
                        name="finetuned-5-9", tags={"role": "finetuned", "freeze": str(cfg.freeze)})

        torch.manual_seed(cfg.seed + 1)  # the same head initialisation as the fine-tuned model
        scratch = DigitsCNN(classes=5)
        scratch_acc = _fit(scratch, torch.optim.Adam(scratch.parameters(), lr=cfg.head_lr), few, test, cfg,
                           epochs=cfg.finetune_epochs, name="scratch-5-9", tags={"role": "scratch"})
    return Result(pre_acc, fine_acc, scratch_acc, len(test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shots", type=int, default=Config.shots, help="labelled examples per class of 5-9")
    parser.add_argument("--epochs", type=int, default=Config.finetune_epochs, help="fine-tune / scratch epochs")
    parser.add_argument("--freeze", action="store_true", help="freeze the features instead of a low learning rate")
    parser.add_argument("--no-track", action="store_true", help="do not log runs")
    args = parser.parse_args()
    cfg = Config(seed=args.seed, shots=args.shots, finetune_epochs=args.epochs, freeze=args.freeze,
                 track=not args.no_track)
    started = time.perf_counter()
    r = run_transfer(cfg)
    print(f"pretrained on digits 0-4: accuracy {r.pretrain_accuracy:.4f} (held-out 0-4)")
    print(f"digits 5-9, {cfg.shots} labels per class, tested on {r.test_rows} others (seed {cfg.seed}):")
    print(f"  fine-tuned   {r.finetuned_accuracy:.4f}")
    print(f"  from scratch {r.scratch_accuracy:.4f}")
    print(f"  margin       {r.margin:+.4f}  ({time.perf_counter() - started:.1f}s)")
    if cfg.track:
        print(f"runs in experiment {EXPERIMENT!r} at {loopml.get_tracking_uri()}")


if __name__ == "__main__":
    main()
