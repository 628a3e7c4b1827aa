"""``loopml data ...``: the datasets the store keeps, their lineage, and their rows as files (see :mod:`loopml.data.stored`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from .cli_common import StoreOpt, console, fmt_time, friendly

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Stored datasets: their records, rows (stored once by content) and lineage.\n\n"
    "Examples:\n\n"
    "  loopml data list\n\n"
    "  loopml data show 701273ed1131\n\n"
    "  loopml data export 701273ed1131 --out train.csv",
    no_args_is_help=True,
)


def _backend(store: str | None) -> Any:
    from .tracking.api import backend_for

    return backend_for(store)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _origin(origin: Any) -> str:
    if not origin:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in origin.items()) if isinstance(origin, dict) else str(origin)


@data_app.command("list")
@friendly
def data_list(
    store: Optional[str] = StoreOpt,
    limit: int = typer.Option(100, "--limit", help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the stored datasets, newest first.

    Example: loopml data list --limit 20
    """
    rows = _backend(store).list_datasets(limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    t = Table("fingerprint", "name", "rows", "task", "stored", "origin", "created")
    for r in rows:
        t.add_row(r["fingerprint"][:12], r["name"], str(r["n_rows"]), r["task"], _size(r.get("stored_size")),
                  _origin(r.get("origin")), fmt_time(r.get("created_at")))
    console().print(t)


@data_app.command("show")
@friendly
def data_show(
    fingerprint: str = typer.Argument(..., help="The fingerprint, or its first 12+ hex digits."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the record and its lineage)."),
) -> None:
    """Show a dataset's record and its lineage both ways: the runs and model versions that used it,
    and the logged predictions its rows came from.

    Example: loopml data show 701273ed1131
    """
    from .data.stored import resolve_prefix

    backend = _backend(store)
    fp = resolve_prefix(backend, fingerprint)
    record = backend.get_dataset(fp)
    lineage = backend.dataset_lineage(fp)
    if as_json:
        typer.echo(json.dumps({"record": record, "lineage": lineage}, indent=2))
        return
    con = console()
    schema = record.get("schema") or {}
    lines = [
        ("fingerprint", fp),
        ("name", record["name"]),
        ("task", record["task"]),
        ("rows", str(record["n_rows"])),
        ("inputs", f"{schema.get('kind', '-')} {' x '.join(map(str, (schema.get('x') or {}).get('shape') or [])) or '-'}"),
        ("classes", ", ".join(map(str, schema.get("class_names") or [])) or "-"),
        ("source", record.get("source") or "-"),
        ("origin", _origin(record.get("origin"))),
        ("stored", f"{record['stored_path']} ({_size(record.get('stored_size'))})" if record.get("stored_path") else "record only (no rows)"),
        ("created", fmt_time(record.get("created_at"))),
    ]
    for key, value in lines:
        con.print(f"{key:<12}{value}", markup=False)
    from rich.table import Table

    if lineage["runs"]:
        t = Table("run", "role", "experiment", "started", title="used by runs")
        for r in lineage["runs"]:
            t.add_row(r["run_id"], r["role"], r["experiment"], fmt_time(r.get("start_time")))
        con.print(t)
    if lineage["versions"]:
        t = Table("model", "version", "roles", title="recorded by model versions")
        for v in lineage["versions"]:
            t.add_row(v["name"], str(v["version"]), ", ".join(v["roles"]) or "-")
        con.print(t)
    preds = lineage["predictions"]
    if preds["rows"]:
        ids = ", ".join(preds["request_ids"][:10]) + (", ..." if preds["truncated"] or len(preds["request_ids"]) > 10 else "")
        con.print(f"made from   {preds['rows']} rows of logged predictions (requests {ids})", markup=False)
    if not (lineage["runs"] or lineage["versions"] or preds["rows"]):
        con.print("lineage     no run, model version or prediction refers to it", markup=False)


@data_app.command("export")
@friendly
def data_export(
    fingerprint: str = typer.Argument(..., help="The fingerprint, or its first 12+ hex digits."),
    out: Path = typer.Option(..., "--out", help="The file to write: .npz (arrays x and y), .csv or .parquet (a table)."),
    target: str = typer.Option("label", "--target", help="The label column of a .csv or .parquet."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Write a stored dataset's rows to a file (checked against its fingerprint first).

    Examples: loopml data export 701273ed1131 --out train.npz;
    loopml data export 701273ed1131 --out train.csv --target species
    """
    from .data.stored import export_dataset

    path = export_dataset(fingerprint, out, target=target, backend=_backend(store))
    typer.echo(f"wrote {path}")
