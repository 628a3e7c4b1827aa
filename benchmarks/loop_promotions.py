"""How often ``loopml.loop.compare`` would promote a challenger that is not better, and one that is.

A small MLP (8 features, 3 overlapping Gaussian classes: about 80% accuracy) is the champion,
trained on population A and registered with its test split. Each trial retrains it through
``loopml.loop.retrain`` and compares the challenger with it on the champion's stored test split
and on a fresh audit-labeled recent sample (``--recent`` rows), seeded per trial:

- ``same``: retrained on fresh rows of population A: no new information;
- ``worse``: retrained from scratch for one epoch on labels shuffled across classes;
- ``better``: retrained on rows of population B (the recent traffic), which the champion
  never saw: the power of the same rule.

Prints the promotions per kind under the default rule (one-sided exact McNemar at alpha 0.01 and
a minimum accuracy gain of 0.02 on the recent rows, not worse on the test split) and, from the
same figures, under a looser rule (alpha 0.05, no minimum gain). The issue asks for 0 promotions
in 20 trials of each kind that is not better.

    .venv/bin/python benchmarks/loop_promotions.py --trials 20
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _population(n: int, means: np.ndarray, seed: int, *, shuffle: bool = False) -> object:
    from loopml import data

    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(means), n)
    x = (means[y] + rng.normal(size=(n, means.shape[1]))).astype(np.float32)
    if shuffle:
        y = rng.permutation(y)
    return data.Dataset(x, y, class_names=["a", "b", "c"], name="blobs")


def _decides(r: object, alpha: float, min_gain: float, which: str) -> bool:
    if which == "test":
        return bool(r.p_value >= alpha)  # type: ignore[attr-defined]
    gain = r.challenger_accuracy - r.champion_accuracy  # type: ignore[attr-defined]
    return bool(r.p_value < alpha and gain >= min_gain)  # type: ignore[attr-defined]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--labels", type=int, default=200, help="labeled rows per retrain")
    p.add_argument("--recent", type=int, default=400, help="audit-labeled recent rows per comparison")
    p.add_argument("--epochs", type=int, default=5)
    a = p.parse_args()
    import torch

    from benchmarks._common import load_average, machine, versions
    from loopml import data
    from loopml.loop.compare import compare
    from loopml.loop.retrain import retrain
    from loopml.models.nets import MLP
    from loopml.models.registry import register
    from loopml.tracking import api
    from loopml.train import Trainer

    torch.set_num_threads(1)
    means_a = np.random.default_rng(42).normal(scale=1.2, size=(3, 8))
    means_b = np.random.default_rng(43).normal(scale=1.2, size=(3, 8)) + 4.0
    with tempfile.TemporaryDirectory(prefix="loopml-bench-loop-") as tmp:
        os.environ["LOOPML_HOME"] = str(Path(tmp) / "home")
        uri = f"sqlite:///{Path(tmp) / 'loopml.db'}"
        parts = data.split(_population(2000, means_a, 0), val=0.15, test=0.15, seed=0)
        torch.manual_seed(0)
        model = MLP(8, 3, hidden=[32])
        with api.start_run(experiment="bench-loop", tracking_uri=uri) as run:
            Trainer(model, metrics=["accuracy"], seed=0).fit(parts.train, val=parts.val, epochs=10, batch_size=32)
            data.log_dataset(run, parts.test, role="test")
            champion = register(model.eval(), "blobs", input_example=parts.train.x[:8], formats=("torch",), run=run)
        print(f"versions {versions('torch', 'scipy')}; machine {machine()}; load {load_average()}")
        print(f"champion {champion.ref}: {len(parts.train)} training rows, test split {len(parts.test)} rows; "
              f"{a.trials} trials per kind, {a.labels} labels, {a.recent} recent rows, {a.epochs} epochs")
        rules = {"default (alpha 0.01, gain >= 0.02)": (0.01, 0.02), "loose (alpha 0.05, no gain)": (0.05, 0.0)}
        print(f"{'kind':8} {'promoted: ' + ' | '.join(rules):>70} {'test acc d':>11} {'recent acc d':>13} {'s/trial':>8}")
        for kind in ("same", "worse", "better"):
            promoted = dict.fromkeys(rules, 0)
            d_test, d_recent = [], []
            start = time.perf_counter()
            for trial in range(a.trials):
                seed = 1000 + trial
                if kind == "same":
                    labels = _population(a.labels, means_a, seed)
                    options = {}
                elif kind == "worse":
                    labels = _population(a.labels, means_a, seed, shuffle=True)
                    options = {"from_scratch": True, "replay": 0.0}
                else:
                    labels = _population(a.labels, means_b, seed)
                    options = {}
                recent_means = means_b if kind == "better" else means_a
                challenger, _ = retrain(champion.ref, labels, epochs=1 if kind == "worse" else a.epochs, holdout=0.0,
                                        seed=trial, tracking_uri=uri, **options)
                c = compare(champion.ref, challenger, recent=_population(a.recent, recent_means, 5000 + trial),
                            store=False, tracking_uri=uri)
                assert c.test is not None and c.recent is not None
                d_test.append(c.test.challenger_accuracy - c.test.champion_accuracy)
                d_recent.append(c.recent.challenger_accuracy - c.recent.champion_accuracy)
                for rule, (alpha, gain) in rules.items():
                    if _decides(c.test, alpha, gain, "test") and _decides(c.recent, alpha, gain, "recent"):
                        promoted[rule] += 1
            per = (time.perf_counter() - start) / a.trials
            counts = " | ".join(f"{promoted[r]}/{a.trials}" for r in rules)
            print(f"{kind:8} {counts:>70} {np.mean(d_test):>+11.3f} {np.mean(d_recent):>+13.3f} {per:>8.2f}")
        api.close_all()


if __name__ == "__main__":
    main()
