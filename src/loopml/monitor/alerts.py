"""Alert rules on what the monitor measures, stored with the model, fired into the store and a webhook.

A rule watches one metric of a target and fires when the metric crosses its line::

    from loopml.monitor import alerts

    alerts.add_rule("digits@production", "accuracy-floor", metric="accuracy", below=0.90,
                    webhook="https://hooks.example.com/loopml")
    alerts.add_rule("digits@production", "drift", metric="drift", above=0.0)     # any feature drifted
    fired = alerts.evaluate("digits", 3, {"accuracy": 0.84, "drift": 0.02})      # what a monitor computed
    alerts.history("digits")                                                   # every alert, oldest first

Metrics (:data:`METRICS`): ``drift`` (the share of features that drifted in a
window, 0-1), ``accuracy`` (from feedback labels), ``estimated_accuracy``
(label-free) and ``abstention_rate`` (the OOD gate's "I don't know" share).

The target is written as for any version: ``"digits@production"`` follows the
alias (a rule applies to whichever version it points at when the rule is
evaluated), ``"digits/3"`` is one version, ``"digits"`` every version. A rule
fires at most once per ``cooldown`` seconds (default an hour) for one version, so
a window after window of the same decay is one alert, not a flood. Each fired
alert is stored (``loopml.monitor.alerts.history``) and, when the rule has a
webhook, POSTed to it as JSON; the webhook URL is checked when the rule is saved
and before each delivery (:mod:`loopml.monitor.webhooks`), and a delivery that
fails is stored with its reason, never raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError, NotFound
from ..store.monitoring import MonitorLog
from ..store.registry import RegistryStore, check_model_name
from ..store.tracking import TrackingStore
from ..tracking.api import database_for
from .webhooks import check_webhook_url, send_webhook

__all__ = ["METRICS", "Alert", "AlertRule", "add_rule", "delete_rule", "evaluate", "history", "rules"]

METRICS = ("drift", "accuracy", "estimated_accuracy", "abstention_rate")


@dataclass(frozen=True)
class AlertRule:
    """A stored rule: fires when ``metric`` is below (``op`` ``"<"``) or above (``">"``) ``threshold``."""

    target: str
    name: str
    metric: str
    op: str
    threshold: float
    webhook: str | None = None
    allow: tuple[str, ...] = ()
    id: int = 0

    def holds(self, value: float) -> bool:
        return value < self.threshold if self.op == "<" else value > self.threshold


@dataclass(frozen=True)
class Alert:
    """One fired alert: the rule, the version it fired on, the value, and what became of the webhook."""

    rule: str
    target: str
    model: str
    version: int
    metric: str
    value: float
    message: str
    fired_at: float
    delivered: bool | None = None
    delivery_error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _log(tracking_uri: str | None) -> tuple[MonitorLog, TrackingStore]:
    store = database_for(tracking_uri, "Alert rules")
    return MonitorLog(store), store


def _parse_target(target: str) -> tuple[str, int | None, str | None]:
    if not isinstance(target, str) or not target:
        raise ArgumentTypeError(f"Argument target should be a model reference like 'digits@production', 'digits/3' or 'digits'; got {target!r}")
    if "@" in target:
        name, alias = target.split("@", 1)
        check_model_name(name)
        return name, None, alias
    if "/" in target:
        name, number = target.rsplit("/", 1)
        check_model_name(name)
        if not number.isdigit():
            raise ArgumentError(f"Argument target should end in a version number, like 'digits/3'; got {target!r}")
        return name, int(number), None
    check_model_name(target)
    return target, None, None


def add_rule(target: str, name: str, *, metric: str, below: float | None = None, above: float | None = None,
             webhook: str | None = None, allow: Sequence[str] = (), tracking_uri: str | None = None) -> AlertRule:
    """Store a rule on ``target``: fire when ``metric`` is ``below`` or ``above`` a line (give one of them)."""
    _parse_target(target)
    if not isinstance(name, str) or not 0 < len(name) <= 128 or any(ord(c) < 32 for c in name):
        raise ArgumentError(f"Argument name should be 1-128 printable characters, e.g. 'accuracy-floor'; got {name!r}")
    if metric not in METRICS:
        raise ArgumentError(f"Argument metric should be one of {', '.join(METRICS)}; got {metric!r}")
    if (below is None) == (above is None):
        raise ArgumentError("Give exactly one of below= or above=, e.g. add_rule(..., metric='accuracy', below=0.9)")
    line = below if below is not None else above
    if isinstance(line, bool) or not isinstance(line, (int, float)) or not math.isfinite(line):
        raise ArgumentError(f"Argument {'below' if below is not None else 'above'} should be a finite number; got {line!r}")
    allow = tuple(allow)
    if webhook is not None:
        check_webhook_url(webhook, allow=allow)
    log, _ = _log(tracking_uri)
    op = "<" if below is not None else ">"
    rule_id = log.add_rule(target, name, metric=metric, op=op, threshold=float(line), webhook=webhook, allow=allow)
    return AlertRule(target, name, metric, op, float(line), webhook, allow, rule_id)


def rules(target: str | None = None, *, tracking_uri: str | None = None) -> list[AlertRule]:
    """The stored rules (of one target, or all)."""
    log, _ = _log(tracking_uri)
    return [AlertRule(r["target"], r["name"], r["metric"], r["op"], r["threshold"], r["webhook"], tuple(r["allow"]), r["id"])
            for r in log.rules(target)]


def delete_rule(target: str, name: str, *, tracking_uri: str | None = None) -> None:
    """Delete a rule and the alerts it fired."""
    log, _ = _log(tracking_uri)
    log.delete_rule(target, name)


def _applies(rule: AlertRule, model: str, version: int, store: TrackingStore) -> bool:
    name, number, alias = _parse_target(rule.target)
    if name != model:
        return False
    if number is not None:
        return number == version
    if alias is not None:
        try:
            return RegistryStore(store).resolve(rule.target).version == version
        except NotFound:  # the alias was removed: the rule watches nothing until it is set again
            return False
    return True


def evaluate(model: str, version: int, values: Mapping[str, float], *, cooldown: float = 3600.0,
             timeout: float = 5.0, at: float | None = None, tracking_uri: str | None = None) -> list[Alert]:
    """Check every rule that watches ``model`` version ``version`` against ``values``; store and send what fires.

    ``values`` maps metric names to what a monitor measured for one window (a
    metric left out, or NaN for "not enough data", fires nothing). Returns the
    alerts fired now.
    """
    if not isinstance(values, Mapping):
        raise ArgumentTypeError(f"Argument values should be a mapping of metric to number, e.g. {{'accuracy': 0.84}}; got {type(values).__name__}")
    unknown = sorted(set(values) - set(METRICS))
    if unknown:
        raise ArgumentError(f"Argument values should use the metrics {', '.join(METRICS)}; got {unknown}")
    log, store = _log(tracking_uri)
    now = time.time() if at is None else float(at)
    fired: list[Alert] = []
    # the rules that fired on this version within the cooldown, read once
    cooling = {a["rule_id"] for a in log.alerts(model, since=now - cooldown) if a["version"] == version}
    for rule in rules(tracking_uri=tracking_uri):
        value = values.get(rule.metric)
        if value is None or not math.isfinite(float(value)) or not rule.holds(float(value)):
            continue
        if not _applies(rule, model, version, store):
            continue
        if rule.id in cooling:
            continue
        word = "below" if rule.op == "<" else "above"
        message = f"{model}/{version} ({rule.target}): {rule.metric} {float(value):.4g} is {word} {rule.threshold:g} [{rule.name}]"
        delivered: bool | None = None
        error: str | None = None
        if rule.webhook:
            payload = {"alert": rule.name, "target": rule.target, "model": model, "version": version,
                       "metric": rule.metric, "value": float(value), "op": rule.op, "threshold": rule.threshold,
                       "message": message, "fired_at": now}
            try:
                result = send_webhook(rule.webhook, payload, timeout=timeout, allow=rule.allow)
                delivered, error = result.ok, result.error
            except ArgumentError as exc:  # the URL no longer passes (its name resolves elsewhere now)
                delivered, error = False, str(exc)
        log.record_alert(rule.id, model, version, value=float(value), message=message, delivered=delivered,
                         delivery_error=error, at=now)
        fired.append(Alert(rule.name, rule.target, model, version, rule.metric, float(value), message, now, delivered, error))
    return fired


def history(model: str | None = None, *, since: float | None = None, tracking_uri: str | None = None) -> list[Alert]:
    """Fired alerts (of one model, or all), oldest first."""
    log, _ = _log(tracking_uri)
    return [Alert(a["name"], a["target"], a["model"], a["version"], a["metric"], a["value"], a["message"], a["fired_at"],
                  a["delivered"], a["delivery_error"]) for a in log.alerts(model, since=since)]
