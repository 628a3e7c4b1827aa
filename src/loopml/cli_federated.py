"""``loopml federated run|partition``: federated training from a shell (see :mod:`loopml.federated`)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from .cli_common import StoreOpt, console, friendly
from .errors import ArgumentError, ExportError
from .files import atomic_write

if TYPE_CHECKING:
    from torch import nn

    from .data.dataset import Dataset
    from .federated.federation import FederatedResult
    from .store.registry import ModelVersion

__all__ = ["federated_app", "federated_partition_command", "federated_run_command", "run_document", "show_run"]

_EXTRA_MODULES = ("flwr", "opacus", "ray", "matplotlib")

federated_app = typer.Typer(
    help="Federated training: each client trains on rows that never leave it; Flower aggregates, Opacus adds privacy.\n\n"
    "Examples:\n\n"
    "  loopml federated partition --data digits --clients 10 --partition dirichlet --alpha 0.5 --png parts.png\n\n"
    "  loopml federated run --model loopml.models.nets:DigitsCNN --data digits --clients 10 --rounds 20 "
    "--register digits-fed\n\n"
    "  loopml federated run digits@production --data digits --clients 10 --epsilon 8",
    no_args_is_help=True,
)


@federated_app.callback()
def _federated_group() -> None:
    """Federated training: each client trains on rows that never leave it; Flower aggregates, Opacus adds privacy."""


def _need_extra() -> None:
    """Import the federated package's engines now, so that a missing extra is one line that names it."""
    try:
        import loopml.federated.federation  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _EXTRA_MODULES:
            raise
        raise ModuleNotFoundError(f"Federated training needs {exc.name}: pip install 'loopml[federated]'") from exc


def _dataset(data: str, target: Optional[str], store: Optional[str]) -> tuple["Dataset", "Dataset | None"]:
    """``--data`` as (the rows to deal to clients, the server's held-out rows when the data came split)."""
    from .data.sources import resolve
    from .data.split import Split

    got = resolve(data, target=target, tracking_uri=store)  # a fingerprint is looked up in --store's datasets
    if isinstance(got, Split):
        return got.train, got.test if got.test is not None else got.val
    return got, None


def _column(value: Optional[str]) -> Any:
    return int(value) if value is not None and value.isdigit() else value


def _clients(clients: Optional[int], how: str) -> Optional[int]:
    """--clients as given; left out, 10, or for natural clients one per value of --column."""
    if clients is not None:
        return clients
    return None if how == "column" else 10


def _init_args(text: Optional[str]) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArgumentError(f"--init-args should be a JSON object of the class's arguments, e.g. '{{\"channels\": 8}}'; "
                            f"got {text!r} ({exc.msg})") from None
    if not isinstance(args, dict):
        raise ArgumentError(f"--init-args should be a JSON object of the class's arguments, e.g. '{{\"channels\": 8}}'; got {text!r}")
    return args


def _model_from_class(path: str, args: dict[str, Any] | None) -> "nn.Module":
    from torch import nn

    from .models.runtime import import_class

    if ":" not in path:
        raise ArgumentError(f"--model should name a class as package.module:Class, e.g. loopml.models.nets:DigitsCNN; got {path!r}")
    try:
        cls = import_class(path)
    except ExportError as exc:  # its message speaks of registered formats; here the user named a class
        cause = exc.__cause__ or exc
        raise ArgumentError(f"--model {path!r} could not be imported ({cause}); name an importable class as "
                            "package.module:Class, e.g. loopml.models.nets:DigitsCNN") from None
    try:
        model = cls(**(args or {}))
    except TypeError as exc:  # the constructor's own complaint about the arguments, shown as it is
        raise ArgumentError(f"--init-args do not fit {path}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ArgumentError(f"--model should be a torch.nn.Module class; {path} made a {type(model).__name__}")
    return model


def _model_from_version(ref: str, store: Optional[str]) -> tuple["nn.Module", "ModelVersion"]:
    """The registered version's module rebuilt from its ``torch`` format (class and state dict), as retrain does."""
    from .models.registry import load_version, registry_for, resolve_version

    registry = registry_for(store)
    version = resolve_version(registry, ref)
    if "torch" not in version.files or not version.model_spec:
        raise ArgumentError(f"{version.ref} has no 'torch' format (state dict and class) to start a federation from; "
                            "register it with the 'torch' format (its class importable, e.g. loopml.models.nets.MLP or a "
                            "class decorated with @loopml.models.keep_init_args), or pass --model package.module:Class")
    return load_version(registry, version, format="torch").module().train(), version


def _plain(value: Any) -> Any:
    """A history cell as JSON has it: NaN (a round without that figure) as null, NumPy scalars as Python's."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_document(result: "FederatedResult") -> dict[str, Any]:
    """What ``loopml federated run --json`` prints: the federation, its rounds, the privacy spent, the version."""
    partitions = result.partitions
    history = [{str(k): _plain(v) for k, v in row.items()} for row in result.history.to_dict(orient="records")]
    return {
        "run_id": result.run_id,
        "experiment": result.experiment,
        "clients": result.clients,
        "rounds": result.rounds,
        "strategy": result.strategy,
        "failures": result.failures,
        "seconds": result.seconds,
        "privacy": {"mechanism": result.mechanism or "none", "epsilon": result.epsilon, "delta": result.delta},
        "partition": partitions.to_dict(),
        "partition_text": partitions.text(),
        "history": history,
        "final": {k: v for k, v in history[-1].items() if k.startswith("central_")} if history else {},
        "version": result.version.ref if result.version is not None else None,
    }


_ROUND_COLUMNS = (("central_accuracy", "central accuracy"), ("central_loss", "central loss"),
                  ("clients_accuracy", "clients' accuracy"), ("clients_ok", "clients ok"),
                  ("clients_failed", "clients failed"), ("epsilon", "epsilon"), ("seconds", "elapsed s"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value)) if isinstance(value, (int, float)) else str(value)


def show_run(doc: dict[str, Any]) -> None:
    """The human summary of :func:`run_document`: the partition, a table of rounds, the final figures."""
    from rich.table import Table

    con = console()
    con.print(doc["partition_text"], markup=False, end="")
    keys = [(k, title) for k, title in _ROUND_COLUMNS if any(row.get(k) is not None for row in doc["history"])]
    t = Table("round", *(title for _, title in keys), title=f"{doc['strategy']} over {doc['clients']} clients, "
              f"{doc['rounds']} rounds (round 0: the initial model)")
    for row in doc["history"]:
        t.add_row(str(row["round"]), *(_cell(row.get(k)) for k, _ in keys))
    con.print(t)
    final = ", ".join(f"{k.removeprefix('central_')} {_cell(v)}" for k, v in doc["final"].items())
    con.print(f"final (central, held-out rows): {final or '-'}", markup=False)
    p = doc["privacy"]
    if p["mechanism"] == "none":
        con.print("privacy: none (no differential privacy)", markup=False)
    else:
        con.print(f"privacy: {p['mechanism']}, epsilon spent {_cell(p['epsilon'])} at delta {p['delta']:.3g}", markup=False)
    con.print(f"client failures: {doc['failures']}; {doc['seconds']:.1f} s", markup=False)
    con.print(f"run {doc['run_id']} (experiment {doc['experiment']})", markup=False)
    con.print(f"registered {doc['version']}" if doc["version"] else "not registered (--register NAME keeps the model)",
              markup=False)


@friendly
def federated_run_command(
    ref: Optional[str] = typer.Argument(None, help="Start from this registered version (NAME@ALIAS or NAME/VERSION, "
                                        "with the 'torch' format); or give --model."),
    data: str = typer.Option(..., "--data", "-d", help="The rows to deal to the clients: a bundled name (digits, iris, "
                             "wine, breast_cancer, diabetes), a .npz/.csv/.parquet file (with --target) or a stored "
                             "dataset's fingerprint."),
    target: Optional[str] = typer.Option(None, "--target", help="The label column of a .csv/.parquet --data file."),
    model: Optional[str] = typer.Option(None, "--model", help="A fresh model: its class as package.module:Class, "
                                        "e.g. loopml.models.nets:DigitsCNN."),
    init_args: Optional[str] = typer.Option(None, "--init-args", help="The --model class's arguments as JSON, "
                                            "e.g. '{\"channels\": 8}'."),
    clients: Optional[int] = typer.Option(None, "--clients", show_default=False, help="How many clients the rows are "
                                          "dealt to (default 10; with --partition column: one per value)."),
    partition: str = typer.Option("iid", "--partition", help="iid, dirichlet (over classes, --alpha), column "
                                  "(natural clients, --column) or shards (--shards classes each)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration: small is skewed, large is near iid."),
    column: Optional[str] = typer.Option(None, "--column", help="With --partition column: the column that names the client."),
    shards: int = typer.Option(2, "--shards", help="With --partition shards: classes per client."),
    rounds: int = typer.Option(10, "--rounds", help="Federated rounds."),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg, fedprox (--proximal-mu) or fedadam."),
    proximal_mu: float = typer.Option(0.01, "--proximal-mu", help="FedProx's proximal term."),
    local_epochs: int = typer.Option(1, "--local-epochs", help="Epochs each client trains per round."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(0.01, "--lr", help="The clients' learning rate."),
    fraction: float = typer.Option(1.0, "--fraction", help="Share of the clients asked to train each round."),
    min_clients: int = typer.Option(1, "--min-clients", help="A round fewer answer keeps the previous model."),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", help="Differential privacy: the target epsilon "
                                            "(DP-SGD on every client with Opacus; see --central-dp)."),
    delta: float = typer.Option(1e-5, "--delta", help="With --epsilon: delta."),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="With --epsilon: the clipping norm."),
    central_dp: bool = typer.Option(False, "--central-dp", help="With --epsilon: Flower's central DP (clipping and noise "
                                    "on the server) instead of DP-SGD on the clients."),
    engine: str = typer.Option("simulation", "--engine", help="simulation: Flower's simulation engine (clients in Ray "
                               "workers); local: the same apps in this process, the clients in turn (no start-up "
                               "cost); deployment: a SuperLink and a SuperNode per client on 127.0.0.1."),
    deployment: bool = typer.Option(False, "--deployment", help="The same as --engine deployment."),
    dropout: float = typer.Option(0.0, "--dropout", help="The chance a client drops out of a round (rehearses faults)."),
    eval_fraction: float = typer.Option(0.2, "--eval-fraction", help="Share of --data held out for the server's "
                                        "evaluation before the rest is dealt."),
    register: Optional[str] = typer.Option(None, "--register", help="Register the global model under this name "
                                           "(default with REF: REF's model, as its next version)."),
    no_register: bool = typer.Option(False, "--no-register", help="With REF: do not register the result."),
    experiment: str = typer.Option("federated", "--experiment", "-e", help="The experiment the run is filed under."),
    seed: int = typer.Option(0, "--seed"),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (no progress)."),
) -> None:
    """Train a model across clients whose rows never leave them; track every round and register the global model.

    Examples:

      loopml federated run --model loopml.models.nets:DigitsCNN --data digits --clients 10 --partition dirichlet --alpha 0.5 --rounds 20 --register digits-fed

      loopml federated run digits@production --data digits --clients 10 --epsilon 8 --delta 1e-5   (DP-SGD; registers digits' next version)

      loopml federated run --model my.nets:Net --init-args '{"width": 64}' --data rows.csv --target label --strategy fedprox --json
    """
    if ref is None and model is None:
        raise ArgumentError("Give the model to train: a registered version (loopml federated run NAME@ALIAS ...) or "
                            "--model package.module:Class, e.g. --model loopml.models.nets:DigitsCNN")
    if ref is not None and model is not None:
        raise ArgumentError(f"Give either a registered version ({ref}) or --model ({model}), not both")
    if init_args is not None and model is None:
        raise ArgumentError("--init-args go with --model (a registered version keeps its own)")
    if no_register and register is not None:
        raise ArgumentError("--register and --no-register contradict each other; give one")
    if epsilon is None and central_dp:
        raise ArgumentError("--central-dp needs --epsilon (the privacy budget), e.g. --epsilon 8 --central-dp")
    _need_extra()
    import torch

    from .federated.federation import fit
    from .federated.privacy import DP

    privacy = None if epsilon is None else DP(epsilon=epsilon, delta=delta, max_grad_norm=max_grad_norm,
                                              mechanism="central" if central_dp else "dp-sgd")
    parent: "ModelVersion | None" = None
    if ref is not None:
        module, parent = _model_from_version(ref, store)
        args = dict(parent.model_spec.get("init_args") or {}) if parent.model_spec else None
    else:
        assert model is not None
        args = _init_args(init_args)
        torch.manual_seed(seed)  # the fresh weights are the seed's, like the partition
        module = _model_from_class(model, args)
    rows, held_out = _dataset(data, target, store)
    result = fit(module, rows, clients=_clients(clients, partition), partition=partition, alpha=alpha,
                 column=_column(column), shards=shards, rounds=rounds, strategy=strategy, proximal_mu=proximal_mu,
                 local_epochs=local_epochs, batch_size=batch_size, lr=lr, fraction=fraction, min_clients=min_clients, privacy=privacy,
                 eval_data=held_out, eval_fraction=eval_fraction, dropout=dropout,
                 engine="deployment" if deployment else engine, experiment=experiment, init_args=args, seed=seed,
                 progress=not as_json, tracking_uri=store)
    name = register if register is not None else (parent.name if parent is not None and not no_register else None)
    if name is not None:
        extra: dict[str, Any] = {"init_args": args}
        if parent is not None:
            extra["lineage"] = {"parent": parent.ref}
            if name == parent.name:
                extra["parent_version"] = parent.version
        result.register(name, **extra)
    doc = run_document(result)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))
    else:
        show_run(doc)


@friendly
def federated_partition_command(
    data: str = typer.Option(..., "--data", "-d", help="A bundled name (digits, iris, ...), a .npz/.csv/.parquet file "
                             "(with --target) or a stored dataset's fingerprint."),
    target: Optional[str] = typer.Option(None, "--target", help="The label column of a .csv/.parquet --data file."),
    clients: Optional[int] = typer.Option(None, "--clients", show_default=False, help="How many clients the rows are "
                                          "dealt to (default 10; with --partition column: one per value)."),
    partition: str = typer.Option("iid", "--partition", help="iid, dirichlet (--alpha), column (--column) or shards (--shards)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration: small is skewed, large is near iid."),
    column: Optional[str] = typer.Option(None, "--column", help="With --partition column: the column that names the client."),
    shards: int = typer.Option(2, "--shards", help="With --partition shards: classes per client."),
    eval_fraction: float = typer.Option(0.2, "--eval-fraction", help="Share held out for the server first, as "
                                        "`federated run` does (0: deal every row)."),
    seed: int = typer.Option(0, "--seed"),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the clients x classes picture here."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the partition's statistics as JSON."),
) -> None:
    """Show how the rows would be dealt to clients (rows and classes per client) without training.

    With the same options and --seed, this is the partition `loopml federated run` trains on.

    Examples:

      loopml federated partition --data digits --clients 10 --partition dirichlet --alpha 0.5

      loopml federated partition --data digits --clients 10 --partition shards --shards 2 --png shards.png

      loopml federated partition --data rows.csv --target label --partition column --column site --json
    """
    _need_extra()
    from .data.split import split
    from .federated.partitions import partition as make_partition

    if not (isinstance(eval_fraction, float) and 0 <= eval_fraction < 1):
        raise ArgumentError(f"--eval-fraction should be a fraction from 0 to below 1; got {eval_fraction!r}")
    rows, held_out = _dataset(data, target, store)
    if held_out is None and eval_fraction > 0:
        parts = split(rows, val=0.0, test=eval_fraction, seed=seed)  # the rows fit() deals: the same split and seed
        rows = parts.train
    dealt = make_partition(rows, _clients(clients, partition), partition, alpha=alpha, column=_column(column),
                           shards=shards, seed=seed)
    if png is not None:
        figure = dealt.plot()
        buffer = io.BytesIO()
        try:
            figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        finally:
            import matplotlib.pyplot as plt

            plt.close(figure)
        atomic_write(png, buffer.getvalue())
    if as_json:
        typer.echo(json.dumps(dealt.to_dict(), indent=2, allow_nan=False))
        return
    con = console()
    con.print(dealt.text(), markup=False, end="")
    if png is not None:
        con.print(f"wrote {png}", markup=False)


federated_app.command("run")(federated_run_command)
federated_app.command("partition")(federated_partition_command)
