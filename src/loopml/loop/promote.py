"""Promote a challenger (move the alias) only when its comparison says so; roll an alias back.

::

    from loopml.loop.compare import compare
    from loopml.loop.promote import promote, rollback

    promote(compare("digits@production", "digits/4"))   # moves digits@production to 4, or refuses and says why
    rollback("digits", "production")                    # back to the version before: recorded in the alias history

A refused promotion is a :class:`~loopml.errors.Conflict` naming the comparison's reasons.
A comparison made against another version than the one the alias now points at is
stale and refused too (compare again). Each promotion, refusal and rollback writes a
loop event with its cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ArgumentError, ArgumentTypeError, Conflict, NotFound
from ..models.registry import (
    current_user,
    registry_for,
    resolve_version,
    rollback_alias,
)
from ..store.loopevents import LoopEvents
from ..store.registry import AliasEvent, ModelVersion, check_alias, local_registry
from .compare import Comparison, comparison_of

__all__ = ["promote", "rollback"]


def promote(
    comparison: "Comparison | str | ModelVersion",
    alias: str = "production",
    *,
    by: str | None = None,
    cause: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> AliasEvent:
    """Point ``alias`` at the comparison's challenger when its decision is ``promote``; returns the alias move.

    ``comparison``: a :class:`~loopml.loop.compare.Comparison`, or a challenger whose
    stored comparison is read (:func:`~loopml.loop.compare.comparison_of`). Refused
    (:class:`~loopml.errors.Conflict`) when the decision is ``keep`` (the reasons are
    named), or when ``alias`` no longer points at the comparison's champion. Example::

        promote("churn/2").to_version                 # 2
    """
    check_alias(alias)
    if isinstance(comparison, (str, ModelVersion)):
        comparison = comparison_of(comparison, tracking_uri=tracking_uri)
    if not isinstance(comparison, Comparison):
        raise ArgumentTypeError("Argument comparison should be a loopml.loop.compare.Comparison or a challenger's reference "
                                f"('digits/4'); got {type(comparison).__name__}")
    registry = local_registry(registry_for(tracking_uri), "promote")
    champion = resolve_version(registry, comparison.champion)
    challenger = resolve_version(registry, comparison.challenger)
    target = f"{challenger.name}@{alias}"
    why = dict(cause or {"command": "promote"})
    events = LoopEvents(registry.store)
    try:
        current: int | None = registry.resolve(target).version
    except NotFound:
        current = None
    problem = None
    if not comparison.promote:
        problem = f"its comparison with {comparison.champion} decided keep: " + "; ".join(comparison.reasons)
    elif current == challenger.version:
        problem = f"{target} already points at {challenger.ref}"
    elif current is not None and current != champion.version:
        problem = (f"{target} now points at version {current}, not at {comparison.champion} that it was compared with; "
                   f"compare again: loopml compare {target} {challenger.ref}")
    if problem is not None:
        events.record(target, challenger.name, challenger.version, "promote", "skipped", cause=why,
                      details={"refused": problem})
        raise Conflict(f"Not promoting {challenger.ref} to @{alias}: {problem}")
    event = registry.set_alias(challenger.name, alias, challenger.version, by=by if by is not None else current_user())
    events.record(target, challenger.name, challenger.version, "promote", "done", cause=why,
                  details={"from": event.from_version, "to": event.to_version, "by": event.by,
                           "reasons": comparison.reasons})
    return event


def rollback(name: str, alias: str = "production", *, cause: Mapping[str, Any] | None = None,
             tracking_uri: str | None = None) -> AliasEvent:
    """Move ``name@alias`` back to its previous version (:func:`loopml.models.registry.rollback`). Example::

        rollback("churn", "production").to_version    # 1
    """
    if not isinstance(name, str) or "@" in name or "/" in name:
        raise ArgumentError(f"Argument name should be a model name such as 'digits' (the alias apart); got {name!r}")
    return rollback_alias(registry_for(tracking_uri), name, alias, cause=cause)
