"""``loopml retrain``, ``compare``, ``shadow`` and ``loop run|history``: the loop's commands (see :mod:`loopml.loop`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

import typer

from .cli_common import StoreOpt, console, fmt_time, friendly
from .errors import ArgumentError, LoopMLError

if TYPE_CHECKING:
    from .loop.compare import Comparison
    from .loop.run import LoopReport

__all__ = ["add_loop_commands", "compare_command", "loop_app", "retrain_command", "shadow_command"]


def _cause(*words: Any) -> dict[str, Any]:
    """The command as the loop events and the lineage keep it (its arguments, not the process's argv)."""
    return {"command": " ".join(["loopml", *(str(w) for w in words if w is not None)])[:400]}


def _interval(acc: float, ci: Any) -> str:
    return f"{acc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def show_comparison(c: "Comparison") -> None:
    """The comparison as a table (both sets), the decision and its reasons."""
    from rich.table import Table

    con = console()
    t = Table("set", "rows", f"{c.champion} (95% CI)", f"{c.challenger} (95% CI)", "right only: champion",
              "right only: challenger", "one-sided p", "asked", "passed",
              title=f"{c.challenger} against {c.champion}: exact McNemar, alpha {c.alpha}, minimum gain {c.min_gain}")
    for r in (c.test, c.recent):
        if r is None:
            continue
        asked = "not worse" if r.set == "test" else "better"
        t.add_row(r.set, str(r.rows), _interval(r.champion_accuracy, r.champion_interval),
                  _interval(r.challenger_accuracy, r.challenger_interval), str(r.champion_only), str(r.challenger_only),
                  f"{r.p_value:.3g}", asked, "yes" if r.passed else "no")
    con.print(t)
    style = "green" if c.promote else "yellow"
    con.print(f"decision: [bold {style}]{c.decision}[/bold {style}]")
    for reason in c.reasons:
        con.print(f"  - {reason}", markup=False)


def retrain_command(
    ref: str = typer.Argument(..., help="The champion: NAME@ALIAS or NAME/VERSION."),
    labels: Optional[str] = typer.Option(None, "--labels", help="The labeled rows: a .npz file (x, y), a .csv/.parquet "
                                         "file with --target, or a stored dataset's fingerprint (default: the "
                                         "version's agreed labels, loopml label)."),
    target: Optional[str] = typer.Option(None, "--target", help="The label column of a .csv/.parquet --labels file."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Train the same class from fresh weights."),
    epochs: int = typer.Option(10, "--epochs", help="Epochs over labels + replay."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam's learning rate."),
    batch_size: int = typer.Option(32, "--batch-size"),
    replay: float = typer.Option(1.0, "--replay", help="Fraction of the champion's stored training rows mixed in (0: none)."),
    replay_data: Optional[str] = typer.Option(None, "--replay-data", help="The champion's training data, when its run "
                                              "did not store the rows."),
    holdout: float = typer.Option(0.3, "--holdout", help="Fraction of the labels kept out of training: the recent "
                                  "rows the challenger must be better on."),
    min_labels: int = typer.Option(20, "--min-labels", help="Refuse fewer labels than this."),
    seed: int = typer.Option(0, "--seed"),
    promote_if_better: bool = typer.Option(False, "--promote-if-better", help="Compare, and move --alias to the "
                                           "challenger when the comparison says promote."),
    alias: str = typer.Option("production", "--alias", help="The alias --promote-if-better moves."),
    recent: Optional[str] = typer.Option(None, "--recent", help="Audit-labeled recent rows for the comparison "
                                         "(default: the held-out labels)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (no progress bar)."),
) -> None:
    """Retrain a version on new labels plus a replay of its stored training data; register the challenger.

    Fine-tunes the champion's weights (or, with --from-scratch, the same class from fresh
    weights), refits its OOD gate and drift reference, and registers the challenger under
    the same name with its lineage (parent, labels, replay, this command). With
    --promote-if-better it is compared with the champion (loopml compare) and promoted
    when it is not worse on the test split and better on the recent rows.

    Example: loopml retrain digits@production     (the labels given with loopml label)

    Example: loopml retrain digits@production --labels labels.npz

    Example: loopml retrain digits@production --labels labels.npz --epochs 5 --promote-if-better
    """
    from .data.sources import resolve
    from .loop.compare import compare
    from .loop.promote import promote
    from .loop.retrain import retrain
    from .tracking.api import backend_for

    data = resolve(labels, target=target, backend=backend_for(store)) if labels is not None else None
    cause = _cause("retrain", ref, "--labels", labels, "--from-scratch" if from_scratch else None,
                   "--promote-if-better" if promote_if_better else None)
    challenger, report = retrain(
        ref, data, replay=replay, replay_data=replay_data, holdout=holdout, from_scratch=from_scratch, epochs=epochs,
        lr=lr, batch_size=batch_size, seed=seed, min_labels=min_labels, cause=cause, progress=not as_json,
        tracking_uri=store,
    )
    assert challenger is not None  # registered
    out: dict[str, Any] = {"challenger": challenger.ref, "report": report.to_dict()}
    if not as_json:
        con = console()
        con.print(f"[bold]{challenger.ref}[/bold] registered, retrained from {report.champion} on {report.labels} labels "
                  f"({report.recent} held out) + {report.replay} replayed rows; val accuracy "
                  f"{'-' if report.val_accuracy is None else format(report.val_accuracy, '.4f')}; run {report.run_id}")
    if promote_if_better:
        comparison = compare(report.champion, challenger, recent=recent, cause=cause, tracking_uri=store)
        out["comparison"] = comparison.to_dict()
        if not as_json:
            show_comparison(comparison)
        if comparison.promote:
            event = promote(comparison, alias, cause=cause, tracking_uri=store)
            out["promoted"] = event.to_dict()
            if not as_json:
                console().print(f"{challenger.name}@{alias} moved from {event.from_version} to {event.to_version}")
        elif not as_json:
            console().print(f"{challenger.name}@{alias} left where it was")
    if as_json:
        typer.echo(json.dumps(out, indent=2))


def compare_command(
    champion: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION."),
    challenger: str = typer.Argument(..., help="NAME/VERSION."),
    test: Optional[str] = typer.Option(None, "--test", help="Rows it must not be worse on (default: the champion's "
                                       "stored test split): a .npz file or a fingerprint."),
    recent: Optional[str] = typer.Option(None, "--recent", help="Audit-labeled recent rows it must be better on "
                                         "(default: the labels its retrain held out)."),
    alpha: float = typer.Option(0.01, "--alpha", help="Level of both one-sided tests."),
    min_gain: float = typer.Option(0.02, "--min-gain", help="Smallest accuracy gain on the recent rows that counts."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Champion against challenger on the same rows: exact one-sided McNemar tests, the decision and why.

    The challenger must not be worse on the champion's test split and must be better on
    the recent audit-labeled rows. The result is stored with the challenger
    (loopml models show) and `loopml retrain --promote-if-better` acts on it.

    Example: loopml compare digits@production digits/4

    Example: loopml compare digits@production digits/4 --recent audit.npz --json
    """
    from .loop.compare import compare

    result = compare(champion, challenger, test=test, recent=recent, alpha=alpha, min_gain=min_gain,
                     cause=_cause("compare", champion, challenger),
                     tracking_uri=store)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    show_comparison(result)


def shadow_command(
    champion: str = typer.Argument(..., help="NAME@ALIAS or NAME/VERSION whose logged traffic is scored."),
    challenger: str = typer.Argument(..., help="NAME/VERSION to score it with (not served)."),
    since: Optional[str] = typer.Option(None, "--since", help="The requests of the last 30m, 1h, 7d, ..."),
    last: Optional[int] = typer.Option(None, "--last", help="The newest N requests."),
    show: int = typer.Option(10, "--show", help="Disagreements to list."),
    to_queue: bool = typer.Option(False, "--to-queue", help="Add the disagreements to the champion's labeling queue "
                                  "(reason disagreement)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every disagreement)."),
) -> None:
    """Score a challenger on the champion's logged inputs without serving it; agreement and disagreements.

    Example: loopml shadow digits@production digits/4 --since 1h

    Example: loopml shadow digits@production digits/4 --last 1000 --to-queue
    """
    from rich.table import Table

    from .loop.shadow import shadow

    report = shadow(champion, challenger, since=since, last=last, to_queue=to_queue,
                    cause=_cause("shadow", champion, challenger, "--to-queue" if to_queue else None), tracking_uri=store)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    con = console()
    agreement = "-" if report.agreement is None else f"{report.agreement:.3f}"
    con.print(f"{report.challenger} on {report.champion}'s traffic: {report.requests} requests, {report.rows} rows "
              f"answered, agreement [bold]{agreement}[/bold] ({len(report.disagreements)} disagreements; "
              f"{report.abstained} abstained rows and {report.without_inputs} requests without kept inputs left out)")
    if report.queued is not None:
        con.print(f"{report.queued} disagreements added to the labeling queue of {report.champion} "
                  f"({len(report.disagreements) - report.queued} were queued already)")
    t = Table("champion's answer", "rows", "disagree", "rate", title="per class")
    for cls, entry in report.per_class.items():
        t.add_row(cls, str(entry["rows"]), str(entry["disagree"]), f"{entry['rate']:.3f}")
    con.print(t)
    if report.disagreements and show > 0:
        d = Table("request id", "row", "champion", "challenger", title=f"disagreements (first {show})")
        for x in report.disagreements[:show]:
            d.add_row(x.request_id, str(x.row), x.champion, x.challenger)
        con.print(d)


loop_app = typer.Typer(
    help="The whole loop in one command: monitor -> queue -> retrain -> compare -> promote, safe to run from cron.\n\n"
    "Example:\n\n"
    "  loopml loop run digits@production\n\n"
    "  loopml loop run digits@production --every 10m\n\n"
    "  loopml loop history digits@production",
    no_args_is_help=True,
)


@loop_app.callback()
def _loop_group() -> None:
    """The whole loop in one command: monitor -> queue -> retrain -> compare -> promote."""


_STYLE = {"done": "green", "skipped": "yellow", "failed": "red", "running": "cyan"}


def _show_report(report: "LoopReport") -> None:
    from rich.table import Table

    con = console()
    if report.locked_by is not None:
        d = report.locked_by
        con.print(f"{report.target}: another run holds the lock (pid {d.get('pid')} on {d.get('host')}, since "
                  f"{fmt_time(d.get('started'))}); nothing done", markup=False)
        return
    t = Table("step", "status", "why", "cause", title=f"loopml loop run {report.target} (champion {report.champion}, "
              f"{report.seconds:.1f} s)")
    for st in report.steps:
        style = _STYLE.get(st.status, "")
        t.add_row(st.step, f"[{style}]{st.status}[/{style}]", st.why, _cause_text(st.cause))
    con.print(t)
    if report.promoted:
        con.print(f"[bold green]{report.target} now serves {report.promoted}[/bold green]")
    elif report.challenger:
        con.print(f"{report.challenger} registered; {report.target} left where it was")


def _cause_text(cause: dict[str, Any]) -> str:
    parts = []
    for a in cause.get("alerts", [])[:3]:
        parts.append(f"alert #{a['id']} {a['rule']}" if isinstance(a, dict) else f"alert #{a}")
    if cause.get("flagged"):
        parts.append(f"{len(cause['flagged'])} flagged result(s)")
    if cause.get("short"):
        parts.append(f"queue short ({cause['short']['open']} open)")
    if "new_labels" in cause:
        parts.append(f"{cause['new_labels']} new labels")
    if not parts and cause.get("command"):
        parts.append(str(cause["command"])[:60])
    return ", ".join(parts)


def loop_run_command(
    target: str = typer.Argument(..., help="NAME@ALIAS: the loop promotes by moving the alias."),
    every: Optional[str] = typer.Option(None, "--every", help="Run a pass every 10m, 1h, ... until Ctrl-C "
                                        "(default: one pass)."),
    once: bool = typer.Option(False, "--once", help="One pass and exit (the default; with --every, its first pass only)."),
    queue_size: int = typer.Option(200, "--queue-size", help="Open items the labeling queue aims for."),
    audit: float = typer.Option(0.1, "--audit", help="The audit slice's share of the queue (unbiased accuracy)."),
    min_labels: int = typer.Option(20, "--min-labels", help="New agreed labels a retrain needs."),
    label_budget: int = typer.Option(1000, "--label-budget", help="Queue items per --budget-period, open ones included."),
    budget_period: str = typer.Option("7d", "--budget-period", help="The label budget's period: 1d, 7d, ..."),
    cooldown: str = typer.Option("6h", "--cooldown", help="Least time between two retrains of the model (0: none)."),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="Move the alias when the comparison says promote."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Retrain the same class from fresh weights."),
    epochs: int = typer.Option(10, "--epochs", help="Retraining epochs."),
    holdout: float = typer.Option(0.3, "--holdout", help="Share of the labels kept for the comparison's recent set."),
    window: str = typer.Option("1h", "--window", help="The monitoring cycle's window."),
    monitor: bool = typer.Option(True, "--monitor/--no-monitor", help="Run a monitoring cycle first."),
    lock_ttl: str = typer.Option("30m", "--lock-ttl", help="A lock not refreshed for this long expires (a killed run)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per pass."),
) -> None:
    """One pass of the loop: monitor -> queue -> retrain -> compare -> promote, each step recorded with its cause.

    The queue is built when an alert fired or drift was flagged since the last queue step
    (or the queue is short), within the label budget; a retrain needs --min-labels new
    labels and the cooldown passed; the alias moves only when the comparison says so.
    Running it again with nothing new changes nothing. Two runs at once on one target: one
    works, the other records a skip. Exit status 1 when a step failed.

    Example: loopml loop run digits@production

    Example: loopml loop run digits@production --every 10m --label-budget 500 --cooldown 12h

    Example (cron): */10 * * * * loopml loop run digits@production --json >> loop.log
    """
    import time

    from .loop.run import check_options, run
    from .monitor.windows import parse_duration

    check_options(queue_size=queue_size, audit=audit, min_labels=min_labels, label_budget=label_budget,
                  budget_period=budget_period, cooldown=cooldown, window=window, lock_ttl=lock_ttl, holdout=holdout,
                  epochs=epochs)
    period = parse_duration(every, "--every") if every is not None else None
    words = ["loop", "run", target, *(["--every", every] if every else []), *([] if promote else ["--no-promote"])]
    kwargs: dict[str, Any] = dict(queue_size=queue_size, audit=audit, min_labels=min_labels, label_budget=label_budget,
                                  budget_period=budget_period, cooldown=cooldown, promote=promote,
                                  from_scratch=from_scratch, epochs=epochs, holdout=holdout, window=window,
                                  monitor=monitor, lock_ttl=lock_ttl, tracking_uri=store)

    def one() -> "LoopReport":
        report = run(target, cause=_cause(*words), **kwargs)
        if as_json:
            typer.echo(json.dumps(report.to_dict()))
        else:
            _show_report(report)
        return report

    if period is None or once:
        if one().status == "failed":
            raise typer.Exit(1)
        return
    if not as_json:
        typer.echo(f"running the loop on {target} every {every}; Ctrl-C stops")
    passes = failed = 0
    start = time.monotonic()
    try:
        while True:
            try:
                failed += one().status == "failed"
            except LoopMLError as exc:  # one failed pass must not end the schedule (a store away for a while)
                failed += 1
                typer.echo(f"pass failed: {exc}", err=True)
            passes += 1
            time.sleep(max(0.0, start + passes * period - time.monotonic()))
    except KeyboardInterrupt:
        typer.echo(f"stopped after {passes} pass{'es' if passes != 1 else ''} ({failed} with a failed step)",
                   err=as_json)


def loop_history_command(
    target: str = typer.Argument(..., help="NAME@ALIAS (the loop's target), or NAME for every target of the model."),
    last: int = typer.Option(50, "--last", help="How many events."),
    step: Optional[str] = typer.Option(None, "--step", help="Only this step: run, monitor, queue, retrain, compare, "
                                       "promote, rollback, shadow."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The loop's journal (loop_events), newest first: each step, its status, why and its cause.

    Example: loopml loop history digits@production

    Example: loopml loop history digits --step retrain --json
    """
    from rich.table import Table

    from .store.loopevents import STEPS, LoopEvents
    from .tracking.api import database_for

    if last < 1:
        raise ArgumentError(f"Argument --last should be a number of events >= 1; got {last}")
    if step is not None and step not in STEPS:
        raise ArgumentError(f"Argument --step should be one of {', '.join(STEPS)}; got {step!r}")
    events = LoopEvents(database_for(store, "The loop's history"))
    if "@" in target:
        rows = events.events(target, step=step, limit=last)
    else:
        rows = events.events(model=target, step=step, limit=last)
    rows = rows[::-1]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console().print(f"no loop events for {target}", markup=False)
        return
    t = Table("id", "at", "target", "step", "version", "status", "why", "cause", title=f"loop history of {target} (newest first)")
    for r in rows:
        style = _STYLE.get(r["status"], "")
        d = r["details"]
        why = d.get("why") or d.get("error") or d.get("refused") or ("" if r["step"] != "run" else
                                                                     ", ".join(f"{k} {v}" for k, v in (d.get("steps") or {}).items()))
        t.add_row(str(r["id"]), fmt_time(r["at"]), r["target"], r["step"], "-" if r["version"] is None else str(r["version"]),
                  f"[{style}]{r['status']}[/{style}]", str(why)[:120], _cause_text(r["cause"]))
    console().print(t)


loop_app.command("run")(friendly(loop_run_command))
loop_app.command("history")(friendly(loop_history_command))


def add_loop_commands(app: typer.Typer) -> None:
    """Register ``retrain``, ``compare``, ``shadow`` and the ``loop`` group on the top-level app."""
    app.command("retrain")(friendly(retrain_command))
    app.command("compare")(friendly(compare_command))
    app.command("shadow")(friendly(shadow_command))
    app.add_typer(loop_app, name="loop")
