"""How often the per-column drift tests flag a small drift on a monitor cycle's sample, by sample size.

The scheduled monitor (``loopml.monitor.watch``) tests at most ``MAX_REQUESTS`` (5,000) sampled
requests of a window. This measures what that size keeps: the data of
benchmarks/monitor_overhead.py (20 standard normal columns; the reference: 5,000 training rows),
a current sample of N rows with a mean shift of 0.1 sd in one column (twice the drift tests'
minimum effect, ``univariate.MIN_EFFECT``) or without any shift, ``loopml.monitor.drift`` per
column (``multivariate=False``), over seeded trials. Prints the share of trials flagged.

    .venv/bin/python benchmarks/monitor_sample_power.py --trials 100
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--sizes", default="1000,5000")
    p.add_argument("--shift", type=float, default=0.1, help="mean shift of one column, in sd")
    a = p.parse_args()
    import pandas as pd

    from loopml.monitor import drift

    features = 20
    columns = [f"x{i}" for i in range(features)]
    reference = pd.DataFrame(np.random.default_rng(0).normal(size=(5000, features)), columns=columns)
    print(f"reference 5,000 rows x {features} columns; {a.trials} trials per size; shift {a.shift:g} sd in x0")
    for n in (int(v) for v in a.sizes.split(",")):
        flagged = {"shift": 0, "none": 0}
        for trial in range(a.trials):
            rng = np.random.default_rng(1000 + trial)
            x = rng.normal(size=(n, features))
            for case in ("none", "shift"):
                cur = x.copy()
                if case == "shift":
                    cur[:, 0] += a.shift
                report = drift(reference, pd.DataFrame(cur, columns=columns), multivariate=False)
                flagged[case] += bool(report.drifted)
        print(f"sample {n:>6,} rows: drift flagged in {flagged['shift'] / a.trials:.0%} of shifted windows, "
              f"{flagged['none'] / a.trials:.0%} of windows without drift")


if __name__ == "__main__":
    main()
