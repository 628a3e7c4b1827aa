"""``loopml monitor ...``: monitoring commands (see :mod:`loopml.monitor`)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from .cli_common import StoreOpt, _console, _friendly

__all__ = ["monitor_app"]

monitor_app = typer.Typer(
    help="Monitoring: the out-of-distribution gate a server asks before it answers.\n\n"
    "Example:\n\n"
    "  loopml monitor fit-ood digits@production --data digits",
    no_args_is_help=True,
)


@monitor_app.callback()
def _group() -> None:
    """Monitoring: the out-of-distribution gate a server asks before it answers."""


@monitor_app.command("fit-ood")
@_friendly
def fit_ood_command(
    ref: str = typer.Argument(..., help="The version: NAME/VERSION, NAME@VERSION or NAME@ALIAS."),
    data: str = typer.Option("digits", "--data", help="Bundled dataset: fit on its training split, calibrate on its validation split."),
    seed: int = typer.Option(0, "--seed", help="The split's seed (the demo and Trainer use 0)."),
    target: float = typer.Option(0.01, "--target-false-abstain", help="Share of in-distribution inputs the gate may refuse."),
    detectors: list[str] = typer.Option(["vae", "mahalanobis"], "--detector", "-d", help="vae and/or mahalanobis (repeatable)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit the out-of-distribution detectors of a version and store the calibrated gate with it.

    The data is split as the demo and the Trainer split it (stratified, 15% validation, 15% test).

    Example: loopml monitor fit-ood digits@production --data digits
    Example: loopml monitor fit-ood digits/3 --target-false-abstain 0.02 --detector vae
    """
    from . import data as d
    from .monitor.ood import fit_ood

    parts = d.split(d.load(data), val=0.15, test=0.15, stratify=True, seed=seed)
    gate = fit_ood(ref, train=parts.train, val=parts.val, detectors=detectors,
                   target_false_abstain=target, tracking_uri=store)
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
    _console().print(table)
    rates = f"false abstain: target {target:.2%}, validation {gate.val_false_abstain:.2%}"
    if test_rate is not None:
        rates += f", test {test_rate:.2%}"
    typer.echo(f"stored with {ref} (formats ood_gate, " + ", ".join(f"ood_{n}" for n in sorted(gate.detectors))
               + (", ood_features" if "mahalanobis" in gate.detectors else "") + f"); {rates}")
