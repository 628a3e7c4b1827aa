"""``loopml label ...``: the labeling queue and its labels (see :mod:`loopml.loop.queue` and :mod:`loopml.loop.labels`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from .cli_common import StoreOpt, console, fmt_time, friendly
from .errors import ArgumentError
from .files import atomic_write

if TYPE_CHECKING:
    from .store.tracking import TrackingStore

__all__ = ["label_app"]

label_app = typer.Typer(
    help="The labeling queue and its labels: what to label next and why, labels by annotators, their agreement.\n\n"
    "Examples:\n\n"
    "  loopml label queue digits@production --size 200\n\n"
    "  loopml label list digits --status disputed\n\n"
    "  loopml label import labels.csv --annotator ann\n\n"
    "  loopml label agreement digits\n\n"
    "  loopml label export digits@production --out labels.npz",
    no_args_is_help=True,
)


@label_app.callback()
def _group() -> None:
    """The labeling queue and its labels."""


def _db(store: Optional[str]) -> "TrackingStore":
    from .tracking.api import database_for

    return database_for(store, "The labeling queue")


@label_app.command("queue")
@friendly
def queue_command(
    ref: str = typer.Argument(..., help="The version whose request log to pick from: NAME@ALIAS or NAME/VERSION."),
    size: int = typer.Option(200, "--size", help="Open items to aim for (building again adds only what was labelled since)."),
    audit: float = typer.Option(0.1, "--audit", help="The share of --size drawn uniformly at random (the unbiased audit slice)."),
    uncertainty: str = typer.Option("margin", "--uncertainty", help="margin or entropy."),
    since: Optional[float] = typer.Option(None, "--since", help="Only requests logged from then on (seconds since the epoch)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the audit draw."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fill the labeling queue from a version's request log and print the counts by reason.

    Example: loopml label queue digits@production --size 200 --audit 0.1
    """
    from .loop.queue import build_queue

    if uncertainty not in ("margin", "entropy"):
        raise ArgumentError(f"--uncertainty should be margin or entropy; got {uncertainty!r}")
    result = build_queue(ref, size=size, audit=audit, uncertainty=uncertainty, since=since, seed=seed, store=_db(store))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    typer.echo(f"{result.model}/{result.version}: added " + ", ".join(f"{n} {r}" for r, n in result.added.items())
               + "; open " + ", ".join(f"{n} {r}" for r, n in result.open.items()))
    for note in result.notes:
        typer.echo(f"  {note}")


@label_app.command("list")
@friendly
def list_command(
    model: str = typer.Argument(..., help="The model's name."),
    status: Optional[str] = typer.Option("open", "--status", help="open, labelled, disputed, skipped or all."),
    limit: int = typer.Option(50, "--limit", help="At most this many items."),
    after: Optional[int] = typer.Option(None, "--after", help="Items after this id (paging)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List queue items: id, request, row, why it was picked, its status.

    Example: loopml label list digits --status disputed
    """
    from .loop.queue import queue_items

    items = queue_items(model, status=None if status == "all" else status, limit=limit, after_id=after, store=_db(store))
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    from rich.table import Table

    table = Table("id", "version", "request", "row", "reason", "score", "status", "updated (UTC)")
    for it in items:
        table.add_row(str(it["id"]), str(it["version"]), it["request_id"], str(it["row"]), it["reason"],
                      "-" if it["score"] is None else f"{it['score']:.3f}", it["status"], fmt_time(it["updated_at"]))
    console().print(table)


@label_app.command("import")
@friendly
def import_command(
    path: Path = typer.Argument(..., help="A CSV (request_id,row,label[,kind,seconds]) or JSON-lines file."),
    annotator: str = typer.Option(..., "--annotator", help="Whose labels these are."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Store a file of labels as one annotator's (all or none: every line is checked first).

    Example: loopml label import labels.csv --annotator ann
    """
    from .loop.labels import import_labels

    n = import_labels(path, annotator=annotator, store=_db(store))
    typer.echo(f"stored {n} labels by {annotator} from {path}")


@label_app.command("agreement")
@friendly
def agreement_command(
    model: str = typer.Argument(..., help="The model's name (or NAME/VERSION for one version)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """How well annotators agree on the items two or more answered (percent agreement, Cohen's or Fleiss' kappa).

    Example: loopml label agreement digits
    """
    from .loop.labels import agreement

    out = agreement(model, store=_db(store))
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    if not out["items"]:
        typer.echo(f"{model}: no item has answers from two annotators yet")
        return
    typer.echo(f"{model}: {out['items']} items with 2+ answers, {out['percent_agreement']}% agreed, {out['disputed']} disputed; "
               f"{out['kappa_method']} kappa {out['kappa']} ({', '.join(out['annotators'])})")


@label_app.command("export")
@friendly
def export_command(
    ref: str = typer.Argument(..., help="The version: NAME@ALIAS or NAME/VERSION."),
    out: Path = typer.Option(..., "--out", help="The .npz file to write (x, y, class_names, request_id, row)."),
    reason: list[str] = typer.Option([], "--reason", help="Only items queued for this reason (repeatable), e.g. audit."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Write the agreed labels and their logged inputs to a .npz file.

    Example: loopml label export digits@production --out labels.npz --reason audit
    """
    import io

    import numpy as np

    from .loop.labels import label_dataset

    if out.suffix != ".npz":
        raise ArgumentError(f"--out should be a .npz file; got {str(out)!r}")
    ds = label_dataset(ref, reasons=tuple(reason) or None, backend=_db(store))
    keys = ds.predictions  # type: ignore[attr-defined]
    buf = io.BytesIO()
    np.savez(buf, x=ds.x.numpy(), y=ds.y.numpy(), class_names=np.asarray(ds.class_names),
             request_id=np.asarray([k[0] for k in keys]), row=np.asarray([k[1] for k in keys], dtype=np.int64))
    atomic_write(out, buf.getvalue())
    typer.echo(f"wrote {len(ds)} labelled rows of {ref} to {out}")
