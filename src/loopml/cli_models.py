"""``loopml models ...`` and ``loopml quantize``: the registry commands (see :mod:`loopml.models.registry`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from .cli_common import StoreOpt, console, fmt_time, friendly
from .config import settings
from .errors import ArgumentError
from .models.report import mb as _mb
from .models.report import versions_table as _version_rows

__all__ = ["models_app", "quantize_command"]

models_app = typer.Typer(
    help="The model registry: versions, aliases, exports and quantized variants.\n\n"
    "Examples:\n\n"
    "  loopml models list\n\n"
    "  loopml models show digits\n\n"
    "  loopml models alias digits production 3",
    no_args_is_help=True,
)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _show_columns(con: Any, sig: dict[str, Any]) -> None:
    """A tabular version's named columns and the fitted preprocessing it carries."""
    from rich.table import Table

    names = sig.get("feature_names")
    if names:
        shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")
        con.print(f"features   {len(names)}: {shown}", markup=False)
    pre = sig.get("preprocessing")
    if not pre:
        return
    cats = pre.get("categorical", [])
    t = Table("column", "kind", "missing value", "mean", "std", *(["categories"] if cats else []),
              title="preprocessing (fitted on the training split, inside the model)")
    for c in pre.get("numeric", []):
        fill = "refused" if c.get("fill") is None else f"{pre.get('impute')} {c['fill']:.6g}"
        t.add_row(c["name"], "numeric", fill, f"{c['mean']:.6g}", f"{c['std']:.6g}", *([""] if cats else []))
    for c in cats:
        fill = "refused" if c.get("fill") is None else f"most frequent: {c['fill']}"
        t.add_row(c["name"], "one-hot", fill, "", "", ", ".join(c.get("categories", [])))
    con.print(t)


@models_app.command("list")
@friendly
def models_list(
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List registered models with their newest version and aliases.

    Example: loopml models list --json
    """
    from .client import Client

    models = Client(store).list_models()
    if as_json:
        typer.echo(json.dumps([m.to_dict() for m in models], indent=2))
        return
    from rich.table import Table

    table = Table("name", "versions", "latest", "aliases", "updated (UTC)")
    for m in models:
        aliases = ", ".join(f"@{a}→{v}" for a, v in sorted(m.aliases.items()))
        table.add_row(m.name, str(m.version_count), str(m.latest_version or "-"), aliases or "-", fmt_time(m.updated_at))
    console().print(table)


@models_app.command("show")
@friendly
def models_show(
    ref: str = typer.Argument(..., help="NAME (all versions), or NAME/VERSION, NAME@ALIAS for one version."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a model's versions (accuracy, size, latency; variants beside their parent) or one version.

    Example: loopml models show digits        (all versions)
    Example: loopml models show digits@production
    """
    from rich.table import Table

    from .client import Client

    client = Client(store)
    con = console()
    if "/" not in ref and "@" not in ref:
        versions = client.list_versions(ref)
        if as_json:
            typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
            return
        con.print(_version_rows(versions))
        return
    v = client.get_version(ref)
    history = client.alias_history(v.name)
    if as_json:
        d = v.to_dict()
        d["alias_history"] = [e.to_dict() for e in history]
        typer.echo(json.dumps(d, indent=2))
        return
    con.print(f"[bold]{v.ref}[/bold]  aliases {', '.join('@' + a for a in v.aliases) or '-'}  created {fmt_time(v.created_at)} UTC by {v.created_by or '-'}")
    if v.description:
        con.print(v.description, markup=False)
    con.print(f"run {v.run_id or '-'}   parent {v.name}/{v.parent_version}" if v.parent_version else f"run {v.run_id or '-'}")
    sig = v.signature
    ins = ", ".join(f"{i['name']}: {i['dtype']}{list(i['shape'])}" for i in sig.get("inputs", []))
    outs = ", ".join(f"{o['name']}: {o['dtype']}{list(o['shape'])}" for o in sig.get("outputs", []))
    con.print(f"signature  {ins} -> {outs}" + (f"   classes {sig['class_names']}" if sig.get("class_names") else ""), markup=False)
    _show_columns(con, sig)
    files = Table("format", "file", "size", "sha256", "details", title="files")
    for f in v.files.values():
        files.add_row(f.format, f.path.rsplit("/", 1)[-1], _mb(f.size), f.sha256[:16], json.dumps(f.details))
    con.print(files)
    for title, data in (("metrics", v.metrics), ("tags", v.tags), ("measurements", v.measurements)):
        if data:
            t = Table("key", "value", title=title)
            for k, val in sorted(data.items()):
                t.add_row(k, json.dumps(val) if not isinstance(val, str) else val)
            con.print(t)
    datasets = (v.lineage or {}).get("datasets") or {}
    if datasets:
        con.print("datasets   " + "  ".join(f"{role}={fp[:12]}" for role, fp in sorted(datasets.items())))
    if history:
        t = Table("alias", "from", "to", "when (UTC)", "by", title="alias history")
        for e in history:
            t.add_row(e.alias, str(e.from_version or "-"), str(e.to_version or "removed"), fmt_time(e.at), e.by or "-")
        con.print(t)


@models_app.command("alias")
@friendly
def models_alias(
    name: str = typer.Argument(..., help="The model."),
    alias: str = typer.Argument(..., help="e.g. production, staging."),
    version: Optional[int] = typer.Argument(None, help="The version the alias should point at."),
    delete: bool = typer.Option(False, "--delete", help="Remove the alias instead."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Point an alias at a version (every move is recorded: from, to, when, by whom).

    Example: loopml models alias digits production 3
    Example: loopml models alias digits staging --delete
    """
    from .client import Client

    client = Client(store)
    if delete:
        event = client.delete_alias(name, alias)
        typer.echo(f"{name}@{alias} removed (was version {event.from_version})")
        return
    if version is None:
        raise ArgumentError(f"Name the version, e.g. loopml models alias {name} {alias} 3 (or --delete)")
    event = client.set_alias(name, alias, version)
    moved = f"from {event.from_version} " if event.from_version is not None else ""
    typer.echo(f"{name}@{alias} moved {moved}to {event.to_version}")


@models_app.command("rollback")
@friendly
def models_rollback(
    target: str = typer.Argument(..., help="NAME@ALIAS, e.g. digits@production."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Move an alias back to the version it pointed at before its latest move (recorded in its history).

    A second rollback undoes the first. `loopml serve` following the alias swaps back.

    Example: loopml models rollback digits@production
    """
    from .models.registry import rollback

    name, sep, alias = target.partition("@")
    if not sep or not name or not alias:
        raise ArgumentError(f"Argument target should be NAME@ALIAS, e.g. digits@production; got {target!r}")
    event = rollback(name, alias, cause={"command": f"loopml models rollback {target}"}, tracking_uri=store)
    typer.echo(f"{name}@{alias} rolled back from {event.from_version} to {event.to_version}")


@models_app.command("export")
@friendly
def models_export(
    ref: str = typer.Argument(..., help="NAME/VERSION or NAME@ALIAS."),
    formats: list[str] = typer.Option(["onnx"], "--format", "-f", help="onnx, pte or pt2 (repeatable)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Export a version to more formats, each checked against PyTorch (max abs difference <= 1e-4).

    Example: loopml models export digits/1 --format onnx --format pte
    """
    from .client import Client

    v = Client(store).export(ref, formats)
    for fmt in formats:
        f = v.files[fmt]
        typer.echo(f"{v.ref} {fmt}: {_mb(f.size)}, max abs difference vs PyTorch {f.details.get('max_abs_diff', 0):.2e}")


DATA_HELP = ("What to calibrate, fine-tune and measure on: a .npz file (arrays x and y), a .csv or .parquet "
             "file (with --target), a stored dataset's fingerprint, or a bundled set by name (e.g. digits). "
             "Default: the datasets logged with the version's run.")


# loopml.data.sources.FILE_SUFFIXES (importing that module loads torch and pandas: seconds; test_cli_models checks)
DATA_FILE_SUFFIXES = (".npz", ".csv", ".parquet")


def _check_data_file(data: str | None, store: str | None) -> None:
    """A ``--data`` file that does not exist, said before torch, pandas and the version load (7-12 s of imports);
    loopml.data.sources.read_file says the same later. A loopml server refuses files with its own message."""
    if data is None or Path(data).suffix.lower() not in DATA_FILE_SUFFIXES or Path(data).is_file():
        return
    if (store or settings().tracking_uri).startswith(("http://", "https://")):
        return
    raise ArgumentError(f"Argument data should be an existing file; {str(Path(data))!r} does not exist")


def quantize_command(
    ref: str = typer.Argument(..., help="The fp32 version: NAME/VERSION, NAME@VERSION or NAME@ALIAS."),
    method: str = typer.Option(..., "--method", "-m", help="dynamic, static, tqt (trained thresholds) or ptq (min/max)."),
    bits: int = typer.Option(8, "--bits", "-b", help="8, or 4 (tqt and ptq)."),
    data: Optional[str] = typer.Option(None, "--data", help=DATA_HELP),
    target: Optional[str] = typer.Option(None, "--target", help="The label column of a .csv or .parquet --data file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split of a single dataset (15% val, 15% test) and of the calibration sample."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="TQT fine-tuning epochs."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Make a quantized variant of a version, registered as a new version with accuracy, size and latency.

    Example: loopml quantize mlp/1 --method static --data train.npz
    Example: loopml quantize churn@production --method tqt --bits 4 --data churn.csv --target churned
    Example: loopml quantize digits@production --method static     (the data logged with its run)
    """
    _check_data_file(data, store)
    from .client import Client

    client = Client(store)
    v = client.quantize(ref, method=method, bits=bits, data=data, target=target, seed=seed, epochs=epochs)
    versions = [x for x in client.list_versions(v.name) if x.version in (v.version, v.parent_version)]
    console().print(_version_rows(versions))
    typer.echo(f"registered {v.ref} ({method} int{bits} of {v.name}/{v.parent_version})")


models_app.command("quantize")(friendly(quantize_command))


@models_app.command("reference")
@friendly
def models_reference(
    ref: str = typer.Argument(..., help="NAME/VERSION or NAME@ALIAS."),
    data: Optional[str] = typer.Option(None, "--data", help="Its training data, whole: a .npz file (arrays x and y), a "
                                       ".csv or .parquet file (with --target) or a stored dataset's fingerprint. "
                                       "Default: the train dataset logged with the version's run."),
    target: Optional[str] = typer.Option(None, "--target", help="The label column of a .csv or .parquet --data file."),
    store: Optional[str] = StoreOpt,
) -> None:
    """(Re)build and store a version's drift reference from its training data, without retraining.

    Example: loopml models reference digits/1
    Example: loopml models reference churn@production --data train.parquet --target churned
    """
    from .models.reference import store_reference

    v = store_reference(ref, data, target=target, tracking_uri=store)
    f = v.files["drift_reference"]
    typer.echo(f"{v.ref} drift_reference: {_mb(f.size)}, {f.details['rows']:,} rows, {f.details['columns']} columns "
               f"({f.details['sketched']} sketched)")


@models_app.command("delete")
@friendly
def models_delete(
    ref: str = typer.Argument(..., help="NAME/VERSION."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Delete a version and its files (refused while an alias points at it).

    Example: loopml models delete digits/2
    """
    from .client import Client

    Client(store).delete_version(ref)
    typer.echo(f"deleted {ref}")
