"""``loopml monitor ...``: monitoring commands (see :mod:`loopml.monitor`)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Optional

import typer

from .cli_alerts import alert_app
from .cli_common import StoreOpt, console, fmt_time, friendly
from .errors import ArgumentError

if TYPE_CHECKING:
    from .monitor.watch import CheckResult

__all__ = ["monitor_app"]

monitor_app = typer.Typer(
    help="Monitoring: the out-of-distribution gate a server asks before it answers, data drift, scheduled checks "
    "and alerts.\n\n"
    "Example:\n\n"
    "  loopml monitor fit-ood mlp@production --data train.npz\n\n"
    "  loopml monitor drift --reference ref.parquet --current cur.csv\n\n"
    "  loopml monitor watch mlp@production --every 5m",
    no_args_is_help=True,
)


@monitor_app.callback()
def _group() -> None:
    """Monitoring: the out-of-distribution gate a server asks before it answers, and data drift."""


@monitor_app.command("fit-ood")
@friendly
def fit_ood_command(
    ref: str = typer.Argument(..., help="The version: NAME/VERSION, NAME@VERSION or NAME@ALIAS."),
    data: Optional[str] = typer.Option(
        None, "--data",
        help="Fit on it and calibrate on its validation part: a .npz file (arrays x and y), a .csv or .parquet file "
             "(with --target), a stored dataset's fingerprint, or a bundled set by name (e.g. digits). "
             "Default: the datasets logged with the version's run.",
    ),
    target_column: Optional[str] = typer.Option(None, "--target", help="The label column of a .csv or .parquet --data file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split of a single dataset (15% validation, 15% test)."),
    target: float = typer.Option(0.01, "--target-false-abstain", help="Share of in-distribution inputs the gate may refuse."),
    detectors: list[str] = typer.Option(["vae", "mahalanobis"], "--detector", "-d", help="vae and/or mahalanobis (repeatable)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit the out-of-distribution detectors of a version and store the calibrated gate with it.

    A single dataset is split as the Trainer splits it (stratified, 15% validation, 15% test);
    the inputs are checked against the version's signature first.

    Example: loopml monitor fit-ood mlp@production --data train.npz
    Example: loopml monitor fit-ood churn/3 --data churn.csv --target churned --detector mahalanobis
    Example: loopml monitor fit-ood digits/3 --target-false-abstain 0.02     (the data logged with its run)
    """
    from .client import Client

    client = Client(store)
    parts = client.version_data(ref, data, target=target_column, seed=seed,
                                example=f"e.g. loopml monitor fit-ood {ref} --data train.npz (arrays x and y), "
                                        "or --data table.csv --target label")
    if parts.val is None:
        raise ArgumentError("Argument --data should have a validation part to calibrate the gate on; pass one file (it is split)")
    gate = client.fit_ood(ref, train=parts.train, val=parts.val, detectors=detectors, target_false_abstain=target)
    x_test = parts.test.x.numpy() if parts.test is not None else None
    test_rate = float((gate.score(x_test) > gate.threshold).mean()) if x_test is not None else None
    summary: dict[str, Any] = {
        "ref": ref, "detectors": sorted(gate.detectors), "thresholds": gate.thresholds,
        "target_false_abstain": gate.target_false_abstain, "val_false_abstain": gate.val_false_abstain,
        "test_false_abstain": test_rate,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.table import Table

    table = Table("detector", "threshold", title=f"OOD gate of {ref}")
    for name, threshold in summary["thresholds"].items():
        table.add_row(name, f"{threshold:.4g}")
    console().print(table)
    rates = f"false abstain: target {target:.2%}, validation {gate.val_false_abstain:.2%}"
    if test_rate is not None:
        rates += f", test {test_rate:.2%}"
    typer.echo(f"stored with {ref} (formats ood_gate, " + ", ".join(f"ood_{n}" for n in sorted(gate.detectors))
               + (", ood_features" if "mahalanobis" in gate.detectors else "") + f"); {rates}")


monitor_app.add_typer(alert_app, name="alert")


@monitor_app.command("drift")
@friendly
def drift_command(
    ref: Optional[str] = typer.Argument(None, help="A served version (NAME@ALIAS, NAME/VERSION): its request log against its training data."),
    since: Optional[str] = typer.Option(None, "--since", help="With a version: the requests of the last 30m, 1h, 7d, ..."),
    last: Optional[int] = typer.Option(None, "--last", help="With a version: the newest N requests."),
    reference: Optional[str] = typer.Option(None, "--reference", help="The reference data: a .csv, .parquet or .npz file (array x)."),
    current: Optional[str] = typer.Option(None, "--current", help="The data to compare with it, same columns and formats."),
    target: Optional[str] = typer.Option(None, "--target", help="A label column to leave out of the features."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise error rate of Holm's correction over all tests."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    html: Optional[str] = typer.Option(None, "--html", help="Also write the report as a standalone HTML page here."),
    multivariate: Optional[bool] = typer.Option(None, "--multivariate/--no-multivariate", show_default=False,
                                                help="Also test the joint distribution (a classifier two-sample test); "
                                                     "default: whenever the reference has rows (a stored reference keeps a sample)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Compare a served version's request log with its training data, or two tables, feature by feature.

    Numeric columns: Kolmogorov-Smirnov (chi-square on the counts when there are few values),
    effect Wasserstein / reference sd; categorical and boolean columns: chi-square, effect
    Jensen-Shannon distance; missing-value rates and unseen categories too. A column is flagged
    when its test is significant after Holm's correction and its effect is above the minimum
    (docs/monitoring.md).

    Example: loopml monitor drift digits@production --since 1h
    Example: loopml monitor drift --reference ref.parquet --current cur.csv
    Example: loopml monitor drift --reference train.csv --current today.csv --target label --html drift.html
    Example: loopml monitor drift --reference ref.npz --current cur.npz --json
    """
    from .monitor.fromlog import drift

    if ref is not None:
        if reference is not None or current is not None or target is not None:
            raise ArgumentError("Give a version (its request log against its training data) or --reference and "
                                "--current files, not both")
        report = drift(ref, since=since, last=last, tracking_uri=store, alpha=alpha, multivariate=multivariate)
    else:
        if reference is None or current is None:
            raise ArgumentError("Give a version, e.g. loopml monitor drift digits@production --since 1h, "
                                "or two files: --reference ref.parquet --current cur.csv")
        if since is not None or last is not None:
            raise ArgumentError("--since and --last pick a window of a version's request log; give a version")
        report = drift(reference, current, target=target, alpha=alpha, multivariate=multivariate)
    if html:
        report.to_html(html)
    if as_json:
        out = report.to_dict()
        out.pop("histograms")
        typer.echo(json.dumps(out, indent=2))
        return
    from rich.table import Table

    table = Table("feature", "kind", "test", "statistic", "p adjusted", "effect", "drifted", "missing ref -> cur", "note",
                  title=f"Drift: {report.n_current:,} current rows against {report.n_reference:,} reference rows")
    for row in report.features.itertuples(index=False):
        why = [w for w, flag in (("distribution", row.distribution_drifted), ("missing", row.missing_drifted),
                                  ("new categories", row.new_drifted)) if flag]
        table.add_row(
            row.feature, row.kind, row.test, _fmt(row.statistic), _fmt(row.p_adjusted),
            f"{_fmt(row.effect)} {row.effect_name}", ", ".join(why) or "no",
            f"{row.missing_reference:.1%} -> {row.missing_current:.1%}", row.note,
        )
    console().print(table, markup=False)
    flagged = report.drifted_features
    multi = report.multivariate
    typer.echo(f"drifted: {len(flagged)} of {len(report.features)} features" + (f" ({', '.join(flagged)})" if flagged else "")
               + (f"; joint distribution: {'drifted' if multi['drifted'] else 'no drift'} (p = {multi['p_value']:.3g})"
                  if multi and multi.get("p_value") is not None else "")
               + (f"; report written to {html}" if html else ""))


@monitor_app.command("watch")
@friendly
def watch_command(
    ref: str = typer.Argument(..., help="The version to watch: NAME@ALIAS (the version it points at each cycle), NAME/VERSION or NAME."),
    every: str = typer.Option("5m", "--every", help="How often a cycle runs: 30s, 5m, 1h, ..."),
    window: Optional[str] = typer.Option(None, "--window", help="Each cycle looks at the requests of the last 5m, 1h, ... (default: --every)."),
    last: Optional[int] = typer.Option(None, "--last", help="Each cycle looks at the newest N requests instead of a time window."),
    once: bool = typer.Option(False, "--once", help="Run one cycle and exit."),
    min_rows: int = typer.Option(100, "--min-rows", help="Rows a metric needs in a window before it can fire an alert (fewer: not enough data)."),
    multivariate: Optional[bool] = typer.Option(None, "--multivariate/--no-multivariate", show_default=False,
                                                help="Also test the inputs' joint distribution (default: whenever the reference has rows)."),
    max_requests: int = typer.Option(5000, "--max-requests", help="Requests of a window read and decoded at most (a seeded uniform sample; counts stay exact)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per cycle."),
) -> None:
    """Monitor a served version on a schedule: drift, accuracy, estimated accuracy, abstentions; stored, alerts checked.

    Each cycle reads the newest window of the request log of the version the reference
    points at now, stores one result per kind (predictions, drift, performance) for the
    UI, and checks the alert rules (loopml monitor alert add). A failed cycle is
    reported and the next one runs; Ctrl-C stops it (exit 0).

    Example: loopml monitor watch digits@production --every 5m
    Example: loopml monitor watch digits@production --every 1h --window 24h --json
    Example: loopml monitor watch churn/3 --last 10000 --once
    """
    from .monitor.watch import Watcher, watch

    if window is not None and last is not None:
        raise ArgumentError("Give --window (a time window) or --last (the newest N requests), not both")
    if once:
        from .monitor.windows import parse_duration

        parse_duration(every, "--every")
        result = Watcher(ref, window=window or every, last=last, min_rows=min_rows, multivariate=multivariate,
                         max_requests=max_requests, tracking_uri=store).check()
        _print_cycle(result, as_json)
        return
    if window is None and last is None:
        window = every
    def echo_err(line: str) -> None:  # with --json, stdout holds only the JSON lines
        typer.echo(line, err=as_json)

    if not as_json:
        typer.echo(f"watching {ref} every {every} (" + (f"newest {last} requests" if last else f"window {window}")
                   + "); Ctrl-C stops")

    def failed(exc: BaseException) -> None:
        echo_err(f"{_now()} cycle failed: {type(exc).__name__}: {exc}")

    summary = watch(ref, every, window=window, last=last, min_rows=min_rows, multivariate=multivariate,
                    max_requests=max_requests, tracking_uri=store, on_result=lambda r: _print_cycle(r, as_json), on_error=failed)
    echo_err(summary.line())


def _now() -> str:
    import time

    return fmt_time(time.time())


def _print_cycle(result: "CheckResult", as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    from rich.text import Text

    line = Text(f"{_now()} ")
    line.append(result.summary(), style="bold red" if result.alerts else None)
    console().print(line)


def _fmt(v: float) -> str:
    if math.isnan(v):  # no test
        return "-"
    return f"{v:.3g}"
