"""``loopml import mlflow``: copy an MLflow store into loopml's (see :mod:`loopml.store.mlflow_import`)."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from .cli_common import StoreOpt, console, friendly

__all__ = ["import_app"]

import_app = typer.Typer(
    help="Bring history from another tracker into loopml's store.\n\n"
    "Example: loopml import mlflow --from sqlite:///mlflow.db --artifacts ./mlruns",
    no_args_is_help=True,
)


@import_app.command("mlflow")
@friendly
def import_mlflow_command(
    source: str = typer.Option(
        ..., "--from", help="MLflow's tracking URI: sqlite:///mlflow.db, postgresql://user@host/db or http://host:5000."
    ),
    artifacts: Optional[str] = typer.Option(
        None, "--artifacts",
        help="The folder that holds MLflow's files when the recorded locations moved or are mlflow-artifacts:/ "
        "(an mlruns folder, or a server's --artifacts-destination).",
    ),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    """Copy experiments, runs (params, tags, every metric point, artifacts), registered models, versions and
    aliases from MLflow. Running it again copies only what is new.

    Example: loopml import mlflow --from sqlite:///mlflow.db --artifacts ./mlruns
    Example: loopml import mlflow --from postgresql://mlflow@db.internal/mlflow --store postgresql+psycopg://loopml@db.internal/loopml
    Example: loopml import mlflow --from http://mlflow.internal:5000 --json
    """
    from .store.mlflow_import import MlflowSource, import_mlflow
    from .tracking.api import database_for

    src = MlflowSource(source, artifacts=artifacts)  # checked before loopml's store is opened or written
    target = database_for(store, "loopml import mlflow")
    if as_json:
        summary = import_mlflow(src, target)
        typer.echo(json.dumps(summary.to_dict(), indent=2))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    con = console()
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, transient=False) as bar:
        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = import_mlflow(src, target, progress=progress)
    from rich.table import Table

    table = Table("", "copied", "already there", title=f"imported from {summary.source}")
    for kind, copied, existing in summary.rows():
        table.add_row(kind, f"{copied:,}", f"{existing:,}")
    con.print(table)
    if summary.skipped:
        con.print(f"[yellow]{len(summary.skipped)} left out[/yellow] (loopml cannot take them as they are):")
        for line in summary.skipped:
            con.print(f"  {line}", markup=False)
