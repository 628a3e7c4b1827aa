"""The stored drift reference: its size, build and merge time, and drift against it beside drift against the rows.

    .venv/bin/python benchmarks/reference.py                 # digits, and 1,000,000 x 55 (the shared generator)
    .venv/bin/python benchmarks/reference.py --rows 100000   # a smaller table

Data: the digits train split (1,257 images of 8 x 8, summarised per image as drift
does) and the monitoring peers' seeded generator (``gen_data.make_data(rows, 0)``,
``../shared/peers/monitoring/``: 50 numeric, 5 categorical columns, 6 planted drifts).
The peer is drift on the reference rows themselves, in the same process: the
statistic, the flags and the time of ``drift(reference_rows, current)`` beside
``drift(DriftReference, current)``. Sizes: the reference's ``.npz`` bytes beside the
rows' (``np.savez_compressed`` of the numeric columns and the category codes).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def generator_dir() -> Path:
    for c in (ROOT.parent / "shared" / "peers" / "monitoring", ROOT.parents[1] / "shared" / "peers" / "monitoring"):
        if (c / "gen_data.py").is_file():
            return c.resolve()
    sys.exit("gen_data.py not found in ../shared/peers/monitoring")


def rows_bytes(frame: pd.DataFrame) -> int:
    buf = io.BytesIO()
    arrays = {str(c): (frame[c].to_numpy() if frame[c].dtype.kind in "biuf" else pd.factorize(frame[c])[0])
              for c in frame.columns}
    np.savez_compressed(buf, **arrays)
    return len(buf.getvalue())


def timed(fn, repeat: int = 3):  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    from loopml.data import load, split
    from loopml.data.reference import reference_of
    from loopml.monitor.univariate import drift
    from loopml.store.reference import DriftReference, merge

    print(f"versions: {_common.versions('numpy', 'scipy', 'pandas')}; machine: {_common.machine()}; "
          f"load average {_common.load_average()}\n")
    digits = split(load("digits"), val=0.15, test=0.15, seed=0).train
    ref = reference_of(digits)
    print(f"digits train ({len(digits):,} images): reference {len(ref.to_bytes()):,} bytes, "
          f"{len(ref.columns)} columns, {len(ref.sketched)} sketched; the rows "
          f"{rows_bytes(pd.DataFrame(digits.x.numpy().reshape(len(digits), -1))):,} bytes compressed\n")

    sys.path.insert(0, str(generator_dir()))
    from gen_data import make_data, score_flags  # type: ignore[import-not-found]

    reference_rows, current, truth = make_data(args.rows, 0)
    feats = truth["numerical"] + truth["categorical"]
    reference_rows, current = reference_rows[feats], current[feats]
    build_s, stored = timed(lambda: DriftReference.build(reference_rows), repeat=1)
    size = len(stored.to_bytes())
    parts = np.array_split(np.arange(len(reference_rows)), 4)
    part_refs = [DriftReference.build(reference_rows.iloc[p]) for p in parts]
    merge_s, merged = timed(lambda: merge(*part_refs))
    print(f"## {args.rows:,} rows x {len(feats)} columns\n")
    print("| what | figure |\n|---|---|")
    print(f"| reference file | {size:,} bytes ({size / 2**20:.2f} MiB), {len(stored.sketched)} of {len(feats)} columns sketched |")
    print(f"| the rows, compressed .npz | {rows_bytes(reference_rows):,} bytes ({rows_bytes(reference_rows) / size:.0f}x the reference) |")
    print(f"| build (one process, one thread) | {build_s:.2f} s |")
    print(f"| merge of 4 partitions' references | {merge_s:.3f} s |")
    eps = max(c.eps_ks for c in stored.columns.values() if hasattr(c, "eps_ks"))
    eps_m = max(c.eps_ks for c in merged.columns.values() if hasattr(c, "eps_ks"))
    print(f"| largest recorded KS bound, whole / merged | {eps:.2e} / {eps_m:.2e} |")

    rows_s, by_rows = timed(lambda: drift(reference_rows, current, multivariate=False), repeat=2)
    stored_s, by_ref = timed(lambda: drift(stored, current, multivariate=False), repeat=2)
    merged_report = drift(merged, current, multivariate=False)
    a, b, m = (r.features.set_index("feature") for r in (by_rows, by_ref, merged_report))
    num = a["test"] == "ks"
    print(f"| drift against the rows | {rows_s:.2f} s |")
    print(f"| drift against the reference | {stored_s:.2f} s ({rows_s / stored_s:.1f}x faster) |")
    print(f"| largest KS difference, reference / merged vs rows | {(a.loc[num, 'statistic'] - b.loc[num, 'statistic']).abs().max():.2e}"
          f" / {(a.loc[num, 'statistic'] - m.loc[num, 'statistic']).abs().max():.2e} |")
    print(f"| largest W/sd difference | {(a.loc[num, 'effect'] - b.loc[num, 'effect']).abs().max():.2e} |")
    print(f"| flags | rows {score_flags(by_rows.drifted_features, truth)['n_tp']}/6 found, "
          f"reference {score_flags(by_ref.drifted_features, truth)['n_tp']}/6, merged "
          f"{score_flags(merged_report.drifted_features, truth)['n_tp']}/6; same flags: "
          f"{by_rows.drifted_features == by_ref.drifted_features == merged_report.drifted_features} |")


if __name__ == "__main__":
    main()
