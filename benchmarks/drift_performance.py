"""Performance without labels, and concept drift from feedback: loopml beside NannyML's CBPE, in one run.

    .venv/bin/python benchmarks/drift_performance.py                 # 100,000 rows, seeds 0-4, CBPE beside
    .venv/bin/python benchmarks/drift_performance.py --seeds 0 --no-peers
    .venv/bin/python benchmarks/drift_performance.py --json out.json

Data: the monitoring peers' generator (``gen_data.make_data(rows, seed, ...)``, ``--generator DIR``;
default ``../shared/peers/monitoring`` beside the repository), its model columns: ``y_pred_proba`` is a
perfectly calibrated score on the reference (the true P(y | x)), ``y_pred`` = score >= 0.5, ``y_true``
drawn from P(y | x). Three scenarios, as the peers' ``bench_cbpe.py`` has them:

- **covariate**: the six planted input drifts, P(y | x) unchanged (``make_data(rows, seed)``);
- **concept**: the same inputs and a changed P(y | x) (``concept_drift=True``): the model is now
  confidently wrong on part of the data and nothing in the inputs says so;
- **none**: no drift (``drift=False``).

**Label-free estimate.** The reference frame (labels known) plays the validation split: loopml
fits :class:`loopml.monitor.ConfidenceCalibration` on its class probabilities ``[1 - p, p]`` and
labels, then :func:`loopml.monitor.estimated_accuracy` estimates the accuracy of each of the
current frame's 10 chunks of 10,000 rows without their labels, with its default method
(``"isotonic"``: one-vs-rest isotonic calibration, the mean calibrated probability of the predicted
class) and with ``method="atc"`` (average thresholded confidence); also shown, the plain mean
confidence (``estimated_accuracy(p)`` without a calibration). NannyML's CBPE, run by the peers' own
``bench_cbpe.py`` in ``.venv-peers/monitoring/venv_nm`` (fit on the reference, estimate on the
same 10 chunks), estimates the same accuracy. Error: mean absolute difference between the estimate
and the realized accuracy over the 10 chunks, per scenario, averaged over the seeds.

**The 3-class test problem** (``--problem-seeds``, default 0-4; scikit-learn): the problem of
``tests/monitor/test_performance.py`` (``make_classification``, 3 classes, a logistic regression
fitted on 10,000 rows, calibrated on the next 5,000), under covariate shift by selection: rows of the
remaining 25,000 kept with probability ``sigmoid(2 x_k)``, for each of the 10 features ``k``, so
``p(y | x)`` is unchanged. Error: the absolute difference from the realized accuracy of the kept rows,
over the 50 shifts. A miscalibrated, misspecified model, where the generator's is perfectly calibrated.

**Concept drift from feedback.** The stream of correctness a server's feedback gives, in request
order: the last ``--history`` labelled reference rows (before the change), then the current
frame's rows; :func:`loopml.monitor.ddm` (the drift detection method on the error stream, the
detector of ``loopml.monitor.feedback_drift``) runs over it. Reported: the labels after the
change until the first drift (the delay), and any drift before the change (a false alarm).

Goals (issue 13), printed PASS or MISS, nothing asserts: the label-free error under covariate
shift no larger than CBPE's; the concept drift caught from feedback within ``--label-goal``
labels (default 5,000: half of one chunk) on every seed; no drift raised on the stationary stream before the change
(nor after it with no drift).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common  # benchmarks/_common.py: these run as `python benchmarks/<name>.py`

ROOT = Path(__file__).resolve().parent.parent
NM_PYTHON = ROOT / ".venv-peers" / "monitoring" / "venv_nm" / "bin" / "python"
SCENARIOS = ("covariate", "concept", "none")
CHUNKS = 10
# Issue 13: "NannyML's label-free CBPE is within 0.003 of the real ROC AUC under covariate shift but
# reports 0.828 under concept drift while the real figure is 0.702" (ROC AUC, seed 0)
RECORDED_CBPE = "within 0.003 ROC AUC under covariate shift; 0.828 estimated against 0.702 realized under concept drift"


def frames(gen: Path, rows: int, seed: int, scenario: str) -> tuple[Any, Any]:
    sys.path.insert(0, str(gen))
    from gen_data import make_data  # type: ignore[import-not-found]

    ref, cur, _ = make_data(rows, seed, concept_drift=scenario == "concept", drift=scenario != "none")
    return ref, cur


def ours(gen: Path, rows: int, seed: int, scenario: str, history: int) -> dict[str, Any]:
    """loopml's label-free estimate per chunk, and DDM on the stream of correctness."""
    import numpy as np

    from loopml.monitor import ConfidenceCalibration, ddm, estimated_accuracy

    ref, cur = frames(gen, rows, seed, scenario)

    def probs(frame: Any) -> Any:
        p = frame["y_pred_proba"].to_numpy(dtype=np.float64)
        return np.column_stack([1.0 - p, p])

    started = time.perf_counter()
    cal = ConfidenceCalibration.fit(probs(ref), ref["y_true"].to_numpy(dtype=np.int64))
    p_cur = probs(cur)
    bounds = np.linspace(0, len(cur), CHUNKS + 1).astype(int)
    chunks = [slice(bounds[i], bounds[i + 1]) for i in range(CHUNKS)]
    est = np.array([estimated_accuracy(p_cur[c], cal) for c in chunks])
    seconds = time.perf_counter() - started
    atc = np.array([estimated_accuracy(p_cur[c], cal, method="atc") for c in chunks])
    plain = np.array([estimated_accuracy(p_cur[c]) for c in chunks])
    right = (cur["y_pred"].to_numpy() == cur["y_true"].to_numpy())
    realized = np.array([right[c].mean() for c in chunks])

    before = (ref["y_pred"].to_numpy() != ref["y_true"].to_numpy())[-history:]
    stream = np.r_[before, ~right]
    found = ddm(stream)
    drifts = found.drifts
    early = [d for d in drifts if d < len(before)]
    after = [d - len(before) + 1 for d in drifts if d >= len(before)]
    return {"seed": seed, "scenario": scenario, "seconds": seconds, "threshold": cal.threshold, "knots": [len(x) for x, _ in cal.curves],
            "val_accuracy": cal.val_accuracy, "realized": realized.tolist(), "estimate": est.tolist(), "atc": atc.tolist(),
            "mean_confidence": plain.tolist(), "est_mae": float(np.abs(est - realized).mean()),
            "atc_mae": float(np.abs(atc - realized).mean()), "plain_mae": float(np.abs(plain - realized).mean()),
            "realized_mean": float(realized.mean()), "est_mean": float(est.mean()), "ddm_false_alarms": len(early),
            "ddm_labels_to_detect": after[0] if after else None, "ddm_drifts_after": len(after)}


def problem(seeds: list[int]) -> list[dict[str, Any]]:
    """The 3-class test problem under covariate shift by selection on each feature: both methods' errors."""
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from loopml.monitor import ConfidenceCalibration, estimated_accuracy

    out = []
    for seed in seeds:
        x, y = make_classification(n_samples=40_000, n_features=10, n_informative=5, n_classes=3, n_clusters_per_class=1,
                                   flip_y=0.05, random_state=seed)
        model = LogisticRegression(max_iter=1000).fit(x[:10_000], y[:10_000])
        cal = ConfidenceCalibration.fit(model.predict_proba(x[10_000:15_000]), y[10_000:15_000])
        pool, labels = x[15_000:], y[15_000:]
        for k in range(x.shape[1]):
            keep = np.random.default_rng(seed).random(len(pool)) < 1 / (1 + np.exp(-2 * pool[:, k]))
            p = model.predict_proba(pool[keep])
            real = float((p.argmax(axis=1) == labels[keep]).mean())
            out.append({"seed": seed, "feature": k, "rows": int(keep.sum()), "realized": real, "val_accuracy": cal.val_accuracy,
                        "est_err": abs(estimated_accuracy(p, cal) - real),
                        "atc_err": abs(estimated_accuracy(p, cal, method="atc") - real),
                        "plain_err": abs(estimated_accuracy(p) - real)})
    return out


def cbpe(gen: Path, rows: int, seed: int, scenario: str) -> dict[str, Any] | str:
    if not NM_PYTHON.exists():
        return f"skipped: no {NM_PYTHON.relative_to(ROOT)} (make bench-peers)"
    env = dict(os.environ, NML_DISABLE_USAGE_LOGGING="1", DO_NOT_TRACK="1", PYTHONWARNINGS="ignore")
    cmd = [str(NM_PYTHON), str(gen / "bench_cbpe.py"), "--rows", str(rows), "--seed", str(seed), "--scenario", scenario]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    return f"failed: {out.stderr[-300:]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows a side (default 100,000: 10 chunks of 10,000)")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (default 0-4)")
    ap.add_argument("--history", type=int, default=20_000, help="labelled reference rows in the stream before the change")
    ap.add_argument("--label-goal", type=int, default=5_000, help="labels after the change within which DDM must fire "
                    "(default 5,000: half of one 10,000-row chunk)")
    ap.add_argument("--no-peers", action="store_true", help="do not run NannyML's CBPE")
    ap.add_argument("--generator", default=None, help="folder of gen_data.py and bench_cbpe.py")
    ap.add_argument("--problem-seeds", default="0,1,2,3,4", help="seeds of the 3-class test problem ('' to skip)")
    ap.add_argument("--json", default=None, help="write the figures here")
    a = ap.parse_args()
    gen = _common.generator_dir(a.generator)
    seeds = [int(s) for s in a.seeds.split(",")]
    print(json.dumps({"versions": _common.versions("loopml", "numpy", "pandas"), "machine": _common.machine(),
                      "load_average": _common.load_average()}), flush=True)
    import scipy.optimize  # noqa: F401  # the isotonic fit's, as CBPE's imports are left out of its times

    import loopml.monitor  # noqa: F401  # imported once, left out of the times

    results: list[dict[str, Any]] = []
    loads = [_common.load_average()]
    for scenario in SCENARIOS:
        for seed in seeds:
            row = ours(gen, a.rows, seed, scenario, a.history)
            peer = "skipped: --no-peers" if a.no_peers else cbpe(gen, a.rows, seed, scenario)
            if isinstance(peer, dict):
                acc = peer["metrics"]["accuracy"]
                row.update(cbpe_mae=acc["mae"], cbpe_mean=acc["estimated_mean"], cbpe_realized=acc["realized_mean"],
                           cbpe_seconds=peer["wall_s"], cbpe_auc=peer["metrics"]["roc_auc"])
            else:
                row["cbpe"] = peer
            results.append(row)
            loads.append(_common.load_average())
            cb = f"CBPE MAE {row['cbpe_mae']:.4f} ({row['cbpe_seconds']:.2f} s)" if "cbpe_mae" in row else row.get("cbpe")
            print(f"  {scenario:9s} seed {seed}: realized {row['realized_mean']:.4f}  loopml MAE {row['est_mae']:.4f} "
                  f"(ATC {row['atc_mae']:.4f}, mean confidence {row['plain_mae']:.4f}; {row['seconds'] * 1000:.0f} ms)  {cb}  DDM: "
                  f"{row['ddm_labels_to_detect']} labels to detect, {row['ddm_false_alarms']} before the change", flush=True)

    def mean(scenario: str, key: str) -> float | None:
        vals = [r[key] for r in results if r["scenario"] == scenario and r.get(key) is not None]
        return statistics.mean(vals) if vals else None

    print(f"\n## Label-free accuracy estimate, {a.rows:,} rows, 10 chunks, seeds {seeds} "
          f"(load average {min(loads)}-{max(loads)})\n")
    print("| scenario | realized accuracy | loopml estimate (isotonic) | error (MAE over chunks) | ATC, error "
          "| mean confidence, error | CBPE estimate | CBPE error |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in SCENARIOS:
        cm, ce = mean(s, "cbpe_mean"), mean(s, "cbpe_mae")
        print(f"| {s} | {mean(s, 'realized_mean'):.4f} | {mean(s, 'est_mean'):.4f} | {mean(s, 'est_mae'):.6f} | "
              f"{mean(s, 'atc_mae'):.4f} | {mean(s, 'plain_mae'):.4f} | {'-' if cm is None else f'{cm:.4f}'} | {'-' if ce is None else f'{ce:.6f}'} |")
    cov = [r for r in results if r["scenario"] == "covariate" and "cbpe_mae" in r]
    if cov:
        print("\nper seed under covariate shift, loopml against CBPE: " + ", ".join(
            f"{r['seed']}: {r['est_mae']:.4f} / {r['cbpe_mae']:.4f}" for r in cov))
    shifts = problem([int(s) for s in a.problem_seeds.split(",") if s.strip()])
    if shifts:
        import numpy as np

        print(f"\n## The 3-class test problem, covariate shift by selection on each of 10 features, seeds {a.problem_seeds} "
              f"({len(shifts)} shifts, {min(r['rows'] for r in shifts):,}-{max(r['rows'] for r in shifts):,} rows each)\n")
        print("| estimator | mean error | median | 90th percentile | max | shifts where it is the better of the two |\n"
              "|---|---:|---:|---:|---:|---:|")
        for key, name in (("est_err", "loopml isotonic (default)"), ("atc_err", "loopml ATC"), ("plain_err", "mean confidence")):
            e = np.array([r[key] for r in shifts])
            other = np.array([r["atc_err" if key == "est_err" else "est_err"] for r in shifts])
            better = f"{int((e < other).sum())} of {len(e)}" if key != "plain_err" else "-"
            print(f"| {name} | {e.mean():.4f} | {np.median(e):.4f} | {np.quantile(e, 0.9):.4f} | {e.max():.4f} | {better} |")
    print(f"\n## Concept drift from feedback: DDM on the stream of correctness ({a.history:,} labelled rows "
          "before the change)\n")
    print("| scenario | labels after the change to the first drift, per seed | drifts before the change |\n|---|---|---|")
    for s in SCENARIOS:
        rows = [r for r in results if r["scenario"] == s]
        print(f"| {s} | {', '.join(str(r['ddm_labels_to_detect'] or 'none') for r in rows)} | "
              f"{sum(r['ddm_false_alarms'] for r in rows)} |")

    goals: list[tuple[str, str, bool]] = []
    ours_err, theirs = mean("covariate", "est_mae"), mean("covariate", "cbpe_mae")
    if theirs is not None and ours_err is not None:
        goals.append(("label-free error under covariate shift no larger than CBPE's",
                      f"{ours_err:.4f} against {theirs:.4f}", ours_err <= theirs))
    else:
        goals.append(("label-free error under covariate shift no larger than CBPE's",
                      f"{ours_err:.4f}; CBPE not run (recorded: {RECORDED_CBPE})", False))
    concept = [r for r in results if r["scenario"] == "concept"]
    delays = [r["ddm_labels_to_detect"] for r in concept]
    caught = all(d is not None and d <= a.label_goal for d in delays)
    goals.append((f"concept drift caught from feedback within {a.label_goal:,} labels after the change, every seed",
                  f"{delays}", caught))
    early = sum(r["ddm_false_alarms"] for r in results if r["scenario"] != "covariate")
    goals.append((f"no drift raised on the {a.history:,} stationary labels before the change (concept and none, "
                  f"{2 * len(seeds)} streams)", f"{early}", early == 0))
    quiet = [r for r in results if r["scenario"] == "none"]
    goals.append(("no drift from feedback on no-drift data", f"{sum(r['ddm_drifts_after'] + r['ddm_false_alarms'] for r in quiet)} drifts",
                  not any(r["ddm_drifts_after"] or r["ddm_false_alarms"] for r in quiet)))
    print()
    for goal, measured, met in goals:
        print(f"{'PASS' if met else 'MISS'}: {goal}: {measured}")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "problem": shifts, "goals": goals, "loads": loads}, indent=2, default=str))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
