"""``loopml monitor alert ...``: alert rules and the alerts they fired (see :mod:`loopml.monitor.alerts`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import typer

from .cli_common import StoreOpt, console, fmt_time, friendly
from .errors import ArgumentError

__all__ = ["alert_app"]

alert_app = typer.Typer(
    help="Alert rules on drift, accuracy, estimated accuracy and abstention rate, and the alerts they fired.\n\n"
    "Example:\n\n"
    "  loopml monitor alert add digits@production accuracy-floor --metric accuracy --below 0.9 "
    "--webhook https://hooks.example.com/loopml",
    no_args_is_help=True,
)


@alert_app.callback()
def _group() -> None:
    """Alert rules and the alerts they fired."""


@alert_app.command("add")
@friendly
def add_command(
    target: str = typer.Argument(..., help="What the rule watches: NAME@ALIAS (follows the alias), NAME/VERSION or NAME."),
    name: str = typer.Argument(..., help="The rule's name, unique for the target, e.g. accuracy-floor."),
    metric: str = typer.Option(..., "--metric", help="One of drift, accuracy, estimated_accuracy, abstention_rate."),
    below: Optional[float] = typer.Option(None, "--below", help="Fire when the metric is below this."),
    above: Optional[float] = typer.Option(None, "--above", help="Fire when the metric is above this."),
    webhook: Optional[str] = typer.Option(None, "--webhook", help="POST each alert as JSON here (http/https, a public address)."),
    allow: list[str] = typer.Option([], "--allow", help="A host or network the webhook may reach although not public (repeatable)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Store an alert rule.

    Example: loopml monitor alert add digits@production drift --metric drift --above 0
    """
    from .monitor import alerts  # the store's SQLAlchemy only when a command runs

    rule = alerts.add_rule(target, name, metric=metric, below=below, above=above, webhook=webhook, allow=allow,
                           tracking_uri=store)
    word = "below" if rule.op == "<" else "above"
    typer.echo(f"rule {rule.name!r} on {rule.target}: fires when {rule.metric} is {word} {rule.threshold:g}"
               + (f", sent to {rule.webhook}" if rule.webhook else ""))


@alert_app.command("list")
@friendly
def list_command(
    target: Optional[str] = typer.Argument(None, help="Only the rules of this target."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List alert rules.

    Example: loopml monitor alert list digits@production
    """
    from .monitor import alerts  # the store's SQLAlchemy only when a command runs

    found = alerts.rules(target, tracking_uri=store)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in found]))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("target", "name", "metric", "fires when", "webhook")
    for r in found:
        table.add_row(Text(r.target), Text(r.name), r.metric, f"{r.op} {r.threshold:g}", Text(r.webhook or "-"))
    console().print(table)


@alert_app.command("delete")
@friendly
def delete_command(
    target: str = typer.Argument(..., help="The rule's target."),
    name: str = typer.Argument(..., help="The rule's name."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Delete an alert rule and the alerts it fired.

    Example: loopml monitor alert delete digits@production accuracy-floor
    """
    from .monitor import alerts  # the store's SQLAlchemy only when a command runs

    alerts.delete_rule(target, name, tracking_uri=store)
    typer.echo(f"rule {name!r} on {target} deleted")


@alert_app.command("history")
@friendly
def history_command(
    model: Optional[str] = typer.Argument(None, help="Only the alerts of this model."),
    last: int = typer.Option(50, "--last", help="How many of the newest alerts to show."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the alerts that fired, newest last.

    Example: loopml monitor alert history digits --last 20
    """
    from .monitor import alerts  # the store's SQLAlchemy only when a command runs

    if last < 1:
        raise ArgumentError(f"Argument --last should be an int >= 1; got {last}")
    fired = alerts.history(model, tracking_uri=store)[-last:]
    if as_json:
        typer.echo(json.dumps([asdict(a) for a in fired], default=dict))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table("fired (UTC)", "version", "rule", "metric", "value", "webhook")
    for a in fired:
        sent = "-" if a.delivered is None else "sent" if a.delivered else f"failed: {a.delivery_error}"
        table.add_row(fmt_time(a.fired_at), f"{a.model}/{a.version}", Text(a.rule), a.metric, f"{a.value:.4g}", Text(sent))
    console().print(table)
