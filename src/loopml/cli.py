"""The ``loopml`` command: a thin shell over the library.

Every command prints one clear line and exits 2 on a loopml error or a bad
argument; ``--json`` prints data for scripts.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Optional

import typer

from . import config
from .access import read_token_file
from .cli_common import StoreOpt, console, fail, fmt_time, friendly
from .cli_data import data_app
from .cli_explain import explain_command
from .cli_federated import federated_app
from .cli_import import import_app
from .cli_label import label_app
from .cli_loop import add_loop_commands
from .cli_models import models_app, quantize_command
from .cli_monitor import monitor_app

if TYPE_CHECKING:
    from .store.protocols import TrackingBackend

__all__ = ["app", "main"]

app = typer.Typer(
    name="loopml",
    help="loopml: track, register, serve and monitor PyTorch models.\n\n"
    "Examples:\n\n"
    "  loopml experiments list\n\n"
    "  loopml runs list --experiment digits --filter \"metrics.val_acc > 0.9\"\n\n"
    "  loopml models show digits\n\n"
    "  loopml server --port 5000",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
experiments_app = typer.Typer(
    help="Experiments: groups of runs.\n\nExample: loopml experiments list --json", no_args_is_help=True
)
runs_app = typer.Typer(
    help="Runs: params, metrics, tags and artifacts of one training.\n\n"
    "Example: loopml runs list --experiment digits --filter \"metrics.val_acc > 0.9\"",
    no_args_is_help=True,
)
db_app = typer.Typer(
    help="The store's database.\n\nExample: loopml db upgrade --store sqlite:///./.loopml/loopml.db",
    no_args_is_help=True,
)
app.add_typer(experiments_app, name="experiments")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")

def _backend(store: str | None) -> "TrackingBackend":
    from .tracking.api import backend_for

    return backend_for(store)


@experiments_app.command("list")
@friendly
def experiments_list(
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List experiments with their run counts.

    Example: loopml experiments list --json
    """
    exps = _backend(store).list_experiments()
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in exps], indent=2))
        return
    from rich.table import Table

    table = Table("id", "name", "runs", "last activity (UTC)")
    for e in exps:
        table.add_row(str(e.id), e.name, str(e.run_count), fmt_time(e.last_activity))
    console().print(table)


@runs_app.command("list")
@friendly
def runs_list(
    experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Only runs of this experiment."),
    filter: Optional[str] = typer.Option(None, "--filter", "-f", help="e.g. \"metrics.acc > 0.9 and params.lr = '0.01'\""),
    order_by: Optional[list[str]] = typer.Option(None, "--order-by", "-o", help="e.g. 'metrics.acc DESC' (repeatable)."),
    limit: int = typer.Option(50, "--limit", "-n", help="At most this many runs (max 10000)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List runs, newest first, with their newest metric values.

    Example: loopml runs list -e digits -f "metrics.val_acc > 0.9" -o "metrics.val_acc DESC"
    """
    records = _backend(store).search_runs(
        experiments=[experiment] if experiment else None, filter=filter, order_by=order_by, limit=limit
    )
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2, default=str))
        return
    from rich.table import Table

    keys = sorted({k for r in records for k in r.metrics})[:6]
    table = Table("run id", "experiment", "name", "status", "started (UTC)", *keys)
    for r in records:
        table.add_row(
            r.id, r.experiment, r.name, r.status, fmt_time(r.start_time),
            *(f"{r.metrics[k].value:.6g}" if k in r.metrics else "" for k in keys),
        )
    console().print(table)


@runs_app.command("show")
@friendly
def runs_show(
    run_id: str = typer.Argument(..., help="The run's id (see `loopml runs list`)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one run: status, params, tags, newest metrics and artifacts.

    Example: loopml runs show 3fa2c1d0e5b94b7c9d1e2f3a4b5c6d7e
    """
    backend = _backend(store)
    r = backend.get_run(run_id)
    arts = backend.list_artifacts(run_id)
    if as_json:
        d = r.to_dict()
        d["artifacts"] = [a.to_dict() for a in arts]
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    from rich.table import Table

    con = console()
    duration = f"{r.duration:.1f}s" if r.duration is not None else "-"
    con.print(f"[bold]{r.name}[/bold]  {r.id}")
    con.print(f"experiment {r.experiment}   status {r.status}   started {fmt_time(r.start_time)} UTC   duration {duration}")
    if r.git_commit:
        con.print(f"git {r.git_commit}{' (dirty)' if r.git_dirty else ''}")
    if r.command:
        con.print(f"command {r.command}", markup=False)
    if r.parent_id:
        con.print(f"parent {r.parent_id}")
    for title, data in (("params", r.params), ("tags", r.tags)):
        if data:
            t = Table("key", "value", title=title)
            for k, v in sorted(data.items()):
                t.add_row(k, v)
            con.print(t)
    if r.metrics:
        t = Table("metric", "last", "step", "min", "max", "points", title="metrics")
        for k, m in sorted(r.metrics.items()):
            t.add_row(k, f"{m.value:.6g}", str(m.step), f"{m.min:.6g}", f"{m.max:.6g}", str(m.count))
        con.print(t)
    if arts:
        t = Table("path", "size", "sha256", title="artifacts")
        for a in arts:
            t.add_row(a.path, str(a.size), a.sha256[:16])
        con.print(t)


@db_app.command("upgrade")
@friendly
def db_upgrade(store: Optional[str] = StoreOpt) -> None:
    """Upgrade the store's database to this loopml's schema (back it up first).

    Example: loopml db upgrade --store sqlite:///./.loopml/loopml.db
    """
    from .store.engine import create_engine, current_revision, migrate

    uri = config.check_tracking_uri(store) if store else config.settings().tracking_uri
    if uri.startswith(("http://", "https://")):
        fail("db upgrade works on a database URI (sqlite:/// or postgresql+psycopg://), not on a server")
    engine = create_engine(uri)
    before = current_revision(engine)
    after = migrate(engine)
    engine.dispose()
    typer.echo(f"database at revision {after} (was {before or 'empty'})")


@app.command("server")
@friendly
def server(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(5000, "--port", help="Port to listen on (0: any free port)."),
    store: Optional[str] = typer.Option(None, "--store", help="Database URI the server writes to."),
    auth_token_file: Optional[str] = typer.Option(
        None, "--auth-token-file", help="File holding the bearer token every request must send (or LOOPML_SERVER_TOKEN)."
    ),
    allowed_host: Optional[list[str]] = typer.Option(
        None, "--allowed-host", help="Extra Host header values to accept (repeatable)."
    ),
    explain_budget: Optional[int] = typer.Option(
        None, "--explain-budget", show_default=False,
        help="Most one explanation may cost, evaluations x rows x input size (integrated gradients: steps x rows x values); "
        "over it a request is answered 422 over_budget. Default 20,000,000.",
    ),
) -> None:
    """Start the tracking server: a REST API (OpenAPI at /docs) over a store.

    Example: loopml server --port 5000 --store sqlite:///./.loopml/loopml.db
    Example: loopml server --explain-budget 5000000   (POST /api/v1/models/NAME/versions/REF/explain: at most 5,000,000)
    """
    from .explanations.methods import DEFAULT_BUDGET
    from .server.app import serve

    serve(host=host, port=port, store=store, auth_token_file=auth_token_file, allowed_hosts=allowed_host or [],
          explain_budget=DEFAULT_BUDGET if explain_budget is None else explain_budget)


@app.command("ui")
@friendly
def ui(
    port: int = typer.Option(0, "--port", help="Port to listen on (0: any free port)."),
    store: Optional[str] = typer.Option(None, "--store", help="Database URI (default: LOOPML_TRACKING_URI or ./.loopml)."),
) -> None:
    """Open the web UI on the local store: starts a server on 127.0.0.1 and prints its address.

    Example: loopml ui --port 5000   (then open the printed http://127.0.0.1:5000/ui/)
    """
    from .server.app import serve

    serve(host="127.0.0.1", port=port, store=store, announce_ui=True)


@app.command("serve")
@friendly
def serve_command(
    ref: str = typer.Argument(..., help="NAME@ALIAS (followed: hot swap when it moves), NAME or NAME/VER."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8080, "--port", help="Port to listen on (0: any free port)."),
    backend: str = typer.Option("auto", "--backend", help="auto|torch|onnx|executorch (auto: the format with the lowest stored latency, else onnx > pte > torch > pt2)."),
    workers: int = typer.Option(1, "--workers", help="Processes sharing the port, each with the model loaded; one that dies is replaced."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most rows in one forward pass."),
    max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="Longest a request waits for its batch to fill under load."),
    max_queue: int = typer.Option(1024, "--max-queue", help="Requests queued before answering 503 with Retry-After."),
    store: Optional[str] = StoreOpt,
    auth_token_file: Optional[str] = typer.Option(
        None, "--auth-token-file", help="File holding the bearer token every request must send (or LOOPML_SERVER_TOKEN)."
    ),
    allowed_host: Optional[list[str]] = typer.Option(None, "--allowed-host", help="Extra Host header values to accept (repeatable)."),
    log_inputs: float = typer.Option(1.0, "--log-inputs", help="Fraction of requests whose inputs the request log keeps."),
    log_buffer: int = typer.Option(
        8192, "--log-buffer", help="Records the request log holds while its writer catches up; more are dropped and counted."
    ),
    header_timeout: float = typer.Option(
        10.0, "--header-timeout", help="Seconds a client has to send a request's line and headers; then 408 and close."
    ),
    poll_interval: float = typer.Option(
        5.0, "--poll-interval", help="Seconds between two reads of the followed alias in the store: a move made by any "
        "process (another server, the CLI, the loop) is served within about this long."
    ),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Abstain on inputs the version's stored OOD gate flags (loopml monitor fit-ood)."),
    monitor: bool = typer.Option(
        False, "--monitor", help="Also run the scheduled monitor (loopml monitor watch) in a process of its own, stopped with the server."
    ),
    monitor_every: str = typer.Option("5m", "--monitor-every", help="With --monitor: how often a cycle runs (30s, 5m, 1h)."),
    explain_budget: Optional[int] = typer.Option(
        None, "--explain-budget", show_default=False,
        help="Most one explanation may cost, evaluations x rows x input size (integrated gradients: steps x rows x values); "
        "over it a request is answered 422 over_budget. Default 20,000,000.",
    ),
    explain_queue: int = typer.Option(8, "--explain-queue", help="Explanations queued or running in their worker thread before 503."),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle",
        help="Load an MLflow-logged version whose module was pickled (serialization_format='pickle'). Unpickling runs "
        "arbitrary code from whoever wrote the file: only for models from people you trust.",
    ),
) -> None:
    """Serve a registered model over HTTP: batching, validation, request log, metrics, hot swap, explanations.

    Example: loopml serve digits@production --port 8080   (then POST /v1/models/digits/predict)
    Example: loopml serve digits@production --monitor --monitor-every 5m   (drift, accuracy and alerts every 5 minutes)
    Example: loopml serve digits@production --explain-budget 5000000   (POST /v1/models/digits/explain: at most 5,000,000 per explanation)
    """
    from .serve import serve  # the model server's stack (uvloop, httptools, NumPy) only when serving

    token = read_token_file(auth_token_file) if auth_token_file else config.settings().server_token
    serve(ref, workers=workers, host=host, port=port, backend=backend, max_batch=max_batch, max_wait_ms=max_wait_ms,
          max_queue=max_queue, store=store, auth_token=token, allowed_hosts=allowed_host or [], log_inputs=log_inputs,
          log_buffer=log_buffer, header_timeout=header_timeout, poll_interval=poll_interval, use_stored_gate=gate, monitor=monitor,
          monitor_every=monitor_every, explain_queue=explain_queue, allow_pickle=allow_pickle,
          **({} if explain_budget is None else {"explain_budget": explain_budget}))  # None: the server's default


def _add_registry_commands() -> None:
    # the registry commands live in cli_models.py (which imports the helpers above)

    app.add_typer(models_app, name="models")
    app.command("quantize")(friendly(quantize_command))

    app.add_typer(monitor_app, name="monitor")
    app.add_typer(data_app, name="data")
    add_loop_commands(app)  # retrain, compare, shadow
    app.add_typer(label_app, name="label")
    app.command("explain")(explain_command)
    app.add_typer(federated_app, name="federated")
    app.add_typer(import_app, name="import")


_add_registry_commands()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
