"""``loopml.federated.fit``: partition, train on Flower, track every round, register the global model.

Example (docs/federated.md has the guide; tests/federated/test_federation.py runs it)::

    result = loopml.federated.fit(model, data, clients=10, partition="dirichlet", alpha=0.5, rounds=20)
    result.history[["round", "central_accuracy", "clients_ok"]].tail(1)
    result.epsilon                  # None without privacy; the largest epsilon any client spent with DP-SGD
    result.register("digits-fed")   # a version with lineage: rounds, clients, strategy, privacy
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ArgumentError, ArgumentTypeError, FederatedError, LoopMLError
from ..data.dataset import Dataset, from_arrays
from ..data.split import split as split_data
from ..models.rebuild import model_spec
from ..tracking import api
from ..tracking.run import Run
from . import apps, secagg
from . import privacy as dp_module
from .deployment import run_deployment, write_app
from .local import LocalGrid, local_identity
from .apps import STRATEGIES, Job, Plan
from .partitions import PARTITIONS, Partitions
from .partitions import partition as make_partition
from .privacy import DP

if TYPE_CHECKING:
    import pandas as pd

    from ..store.registry import ModelVersion

__all__ = ["ENGINES", "FederatedResult", "fit"]

ENGINES = ("simulation", "local", "deployment")


@dataclass
class FederatedResult:
    """What a federation left: the global model, the per-round history, the privacy spent, the run."""

    model: nn.Module
    history: "pd.DataFrame"
    epsilon: float | None
    delta: float | None
    mechanism: str | None
    run_id: str
    experiment: str
    partitions: Partitions
    clients: int
    rounds: int
    strategy: str
    failures: int
    seconds: float
    tracking_uri: str | None = None
    version: "ModelVersion | None" = None
    lineage: dict[str, Any] = field(default_factory=dict)
    _input_example: torch.Tensor | None = field(default=None, repr=False)
    _train: Dataset | None = field(default=None, repr=False)

    def register(self, name: str, **kwargs: Any) -> "ModelVersion":
        """Register the global model as the next version of ``name``, in the federation's run.

        The version's lineage holds the federation (rounds, clients, strategy, partition,
        privacy) and its tags ``privacy.*``; ``kwargs`` go to :func:`loopml.models.register`.
        """
        from ..models.registry import register

        run = api.start_run(run_id=self.run_id, tracking_uri=self.tracking_uri)
        try:
            kwargs.setdefault("input_example", self._input_example)
            kwargs.setdefault("train_data", self._train)
            if self._train is not None and self._train.class_names is not None:
                kwargs.setdefault("class_names", self._train.class_names)
            lineage = {"federated": self.lineage, **dict(kwargs.pop("lineage", None) or {})}
            tags = {**privacy_tags(self), **dict(kwargs.pop("tags", None) or {})}
            self.version = register(self.model, name, run=run, lineage=lineage, tags=tags, **kwargs)
        finally:
            run.finish()
        return self.version


def privacy_tags(result: FederatedResult) -> dict[str, str]:
    if result.mechanism is None:
        return {"privacy.mechanism": "none"}
    return {"privacy.mechanism": result.mechanism, "privacy.epsilon": f"{result.epsilon:.4g}",
            "privacy.delta": f"{result.delta:.3g}"}


# -- argument checks --------------------------------------------------------------------------------


def _int(name: str, value: Any, low: int) -> int:
    if type(value) is not int or value < low:
        raise ArgumentError(f"Argument {name} should be an integer >= {low}, got {value!r}")
    return value


def _number(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        raise ArgumentError(f"Argument {name} should be a number {bound}" + (f" and <= {high}" if high < math.inf else "")
                            + f", got {value!r}")
    return float(value)


def _as_dataset(data: Any) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return from_arrays(data[0], data[1])
    raise ArgumentTypeError(f"Argument data should be a loopml.data.Dataset or an (x, y) pair, got {type(data).__name__}; "
                            "e.g. loopml.data.load('digits') or loopml.data.from_arrays(x, y)")


# -- quiet Flower and Ray ---------------------------------------------------------------------------


@contextmanager
def _quiet_flower() -> Iterator[None]:
    """Flower logs every round at INFO and Ray warns at start: the user sees loopml's output only."""
    flwr_logger = logging.getLogger("flwr")
    level, propagate = flwr_logger.level, flwr_logger.propagate
    flwr_logger.setLevel(logging.CRITICAL + 1)  # a client's failure is reported by loopml, per round
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "FLWR_TELEMETRY_ENABLED",
                                            "RAY_DEDUP_LOGS")}
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "0"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        flwr_logger.setLevel(level)
        flwr_logger.propagate = propagate
        for key, value in saved.items():  # Flower's Ray backend rewrites PYTHONPATH for its workers
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _simulate(job: Job, live: apps.Sink, secure: bool = False, workers: int | None = None) -> None:
    from flwr.simulation import run_simulation

    if secure:
        server_app, client_app = secagg.secure_server_app(job, live), secagg.secure_client_app(job)
    else:
        server_app, client_app = apps.server_app(job, live), apps.client_app(job)

    # One CPU per client actor: Ray runs as many clients at once as it has CPUs (every core by default).
    cpus = workers or max(1, os.cpu_count() or 1)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": logging.ERROR,
                             "log_to_driver": False, "configure_logging": True}}
    with _quiet_flower():
        try:
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=job.clients, backend_config=backend)  # type: ignore[arg-type]
        except LoopMLError:
            raise
        except Exception as exc:  # the ServerApp's own error, re-raised by Flower in this thread
            cause = exc.__cause__ or exc
            raise FederatedError(f"The federation failed: {type(cause).__name__}: {cause}") from exc


def _run_local(job: Job, live: apps.Sink, secure: bool = False) -> None:
    """The same apps on :class:`~loopml.federated.local.LocalGrid`: in this process, the clients in turn."""
    client_app = secagg.secure_client_app(job) if secure else apps.client_app(job)
    main = secagg.secure_server_main if secure else apps.server_main
    grid = LocalGrid(client_app, job.clients)
    with _quiet_flower(), local_identity() as context:
        try:
            main(grid, context, job, live)
        except LoopMLError:
            raise
        except Exception as exc:  # the ServerApp's own error
            raise FederatedError(f"The federation failed: {type(exc).__name__}: {exc}") from exc


def _deploy(job: Job, timeout: float, recorder: Callable[[dict[str, Any]], None], secure: bool = False) -> None:
    """Run the job on a local SuperLink and SuperNodes; the ServerApp's events are followed as they are written."""
    module = "loopml.federated.secagg" if secure else "loopml.federated.apps"
    app_dir = write_app(job.folder / "app", serverapp=f"{module}:serverapp",
                        clientapp=f"{module}:clientapp", config={apps.JOB_KEY: str(job.folder)})
    nodes: list[dict[str, str | int]] = [{"partition-id": i, "num-partitions": job.clients,
                                          "data-path": str(job.partition_path(i))} for i in range(job.clients)]
    # the SuperLink's and SuperNodes' app processes import the model's class as this process does
    path = os.pathsep.join([p for p in sys.path if p] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    failure: list[BaseException] = []

    def launch() -> None:
        try:
            run_deployment(app_dir, node_configs=nodes, run_config={apps.JOB_KEY: str(job.folder)}, timeout=timeout,
                           workdir=job.folder / "deployment", env={"PYTHONPATH": path})
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)

    worker = threading.Thread(target=launch, name="loopml-federated-deployment", daemon=True)
    worker.start()
    follower = _EventFollower(job.events_path, recorder)
    while worker.is_alive():
        worker.join(0.25)  # the ServerApp runs in another process: its events file is the only channel
        follower.poll()
    follower.poll()
    if failure:
        raise failure[0]


class _EventFollower:
    """Reads the complete lines a ServerApp appended to its events file since the last poll."""

    def __init__(self, path: Path, recorder: Callable[[dict[str, Any]], None]) -> None:
        self.path, self.recorder, self.offset = path, recorder, 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            if line.strip():
                self.recorder(json.loads(line))
        self.offset += end


# -- the recorder: events -> tracked runs ---------------------------------------------------------


class _Recorder:
    """Turns the ServerApp's events into the federation's run, the clients' child runs and the history."""

    def __init__(self, run: Run, children: dict[int, Run], job: Job, progress: Callable[[int], None] | None) -> None:
        self.run, self.children, self.job, self.progress = run, children, job, progress
        self.rows: dict[int, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.t0 = time.time()
        self.epsilons: dict[int, float] = {}

    def row(self, rnd: int) -> dict[str, Any]:
        return self.rows.setdefault(rnd, {"round": rnd})

    def __call__(self, event: dict[str, Any]) -> None:
        kind, rnd = event.get("event"), int(event.get("round", 0))
        ts = float(event.get("time", time.time()))
        if kind == "central":
            metrics = {f"central_{k}" if k != "epsilon" else "epsilon": v for k, v in event["metrics"].items()}
            row = self.row(rnd)
            row.update(metrics)
            row["seconds"] = ts - self.t0
            self.run.log(metrics, step=rnd, timestamp=ts)
            if self.progress is not None and rnd:
                self.progress(rnd)
        elif kind == "train":
            row = self.row(rnd)
            answers, failures = event["answers"], event["failures"]
            row["clients_ok"], row["clients_failed"] = len(answers), len(failures)
            row["kept_previous"] = bool(event["kept_previous"])
            summary: dict[str, float] = {"clients_ok": len(answers), "clients_failed": len(failures)}
            for key in ("train_loss", "epsilon"):
                if key in event["aggregated"]:
                    summary[f"clients_{key}"] = event["aggregated"][key]
            for answer in answers:
                child = self.children.get(int(answer["client"]))
                metrics = {k: v for k, v in answer["metrics"].items() if k != "num-examples"}
                if "epsilon" in metrics:
                    self.epsilons[int(answer["client"])] = metrics["epsilon"]
                if child is not None:
                    child.log(metrics, step=rnd, timestamp=ts)
            if self.epsilons and self.job.plan.privacy is not None and self.job.plan.privacy.mechanism == "dp-sgd":
                row["epsilon"] = summary["epsilon"] = max(self.epsilons.values())
            row.update({k: v for k, v in summary.items() if k.startswith("clients_") and k not in row})
            self.failures.extend({"round": rnd, **f} for f in failures)
            self.run.log(summary, step=rnd, timestamp=ts)
        elif kind == "evaluate":
            row = self.row(rnd)
            agg = event["aggregated"]
            metrics = {f"clients_{k}": v for k, v in agg.items() if k in ("loss", "accuracy")}
            row.update(metrics)
            if metrics:
                self.run.log(metrics, step=rnd, timestamp=ts)
            for answer in event["answers"]:
                child = self.children.get(int(answer["client"]))
                if child is not None and answer["metrics"].get("num-examples", 0) > 0:
                    child.log({f"val_{k}": v for k, v in answer["metrics"].items() if k in ("loss", "accuracy")},
                              step=rnd, timestamp=ts)

    def history(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame([self.rows[k] for k in sorted(self.rows)])


class _Progress:
    """A Rich bar over the rounds in a terminal; one plain line per round elsewhere (pipes, CI=true)."""

    def __init__(self, rounds: int, enabled: bool, file: IO[str] | None = None) -> None:
        self.rounds, self.enabled, self.file = rounds, enabled, file or sys.stderr
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> "_Progress":
        if not self.enabled:
            return self
        ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
        if not ci and hasattr(self.file, "isatty") and self.file.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("federated rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(file=self.file), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("rounds", total=self.rounds)
        return self

    def __call__(self, rnd: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=rnd)
        else:
            print(f"round {rnd}/{self.rounds}", file=self.file, flush=True)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- fit ------------------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    data: Any,
    *,
    clients: int | None = 10,
    partition: str = "iid",
    alpha: float = 0.5,
    column: str | int | None = None,
    shards: int = 2,
    rounds: int = 10,
    strategy: str = "fedavg",
    proximal_mu: float = 0.01,
    server_lr: float = 0.1,
    local_epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.01,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    fraction: float = 1.0,
    min_clients: int = 1,
    privacy: DP | None = None,
    secure_aggregation: bool = False,
    eval_data: Any = None,
    eval_fraction: float = 0.2,
    client_eval: bool = True,
    dropout: float = 0.0,
    engine: str = "simulation",
    workers: int | None = None,
    experiment: str = "federated",
    run_name: str | None = None,
    register: str | None = None,
    init_args: Mapping[str, Any] | None = None,
    seed: int = 0,
    timeout: float = 3600.0,
    progress: bool = True,
    tracking_uri: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> FederatedResult:
    """Train ``model`` on ``data`` split among ``clients`` that never share their rows; returns a :class:`FederatedResult`.

    ``partition``: how the rows are dealt (:data:`loopml.federated.PARTITIONS`: ``"iid"``,
    ``"dirichlet"`` over classes with ``alpha``, ``"column"`` for natural clients, ``"shards"``).
    ``eval_data`` (default: a stratified ``eval_fraction`` of ``data``, held out before
    partitioning) is what the server evaluates the global model on after every round.
    ``strategy``: Flower's ``"fedavg"``, ``"fedprox"`` (with ``proximal_mu``) or ``"fedadam"``
    (with ``server_lr``). Each round ``fraction`` of the clients train ``local_epochs`` with
    ``optimizer`` at ``lr``; a round that fewer than ``min_clients`` answer keeps the old model.
    ``privacy``: :class:`DP` (DP-SGD on every client with Opacus, or ``mechanism="central"``).
    ``secure_aggregation``: Flower's SecAgg+ (the server learns only the sum of the updates; at
    least 3 clients a round; not with central DP; :mod:`loopml.federated.secagg`).
    ``engine``: ``"simulation"`` (Flower's simulation engine: the clients in Ray workers, one per
    core), ``"local"`` (the same apps in this process, the clients in turn: no start-up cost, for
    small federations) or ``"deployment"`` (a SuperLink and one SuperNode per client on 127.0.0.1).
    ``workers``: the simulation engine's Ray workers, clients trained at once (default: one per core). ``dropout``: the chance that a
    client drops out of a round, to rehearse faults. ``register``: a model name to register
    the global model under (or call ``result.register(name)`` later).
    """
    started = time.time()
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}")
    ds = _as_dataset(data)
    if partition not in PARTITIONS:
        raise ArgumentError(f"Argument partition should be one of {', '.join(PARTITIONS)}, got {partition!r}")
    if strategy not in STRATEGIES:
        raise ArgumentError(f"Argument strategy should be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if engine not in ENGINES:
        raise ArgumentError(f"Argument engine should be one of {', '.join(ENGINES)}, got {engine!r}")
    if optimizer not in ("sgd", "adam"):
        raise ArgumentError(f"Argument optimizer should be 'sgd' or 'adam', got {optimizer!r}")
    for name, value, low in (("rounds", rounds, 1), ("local_epochs", local_epochs, 1), ("batch_size", batch_size, 1),
                             ("min_clients", min_clients, 1), ("seed", seed, 0)) + ((("workers", workers, 1),) if workers is not None else ()):
        _int(name, value, low)
    _number("lr", lr, 0.0, open_low=True)
    _number("momentum", momentum, 0.0, 1.0)
    _number("proximal_mu", proximal_mu, 0.0)
    _number("server_lr", server_lr, 0.0, open_low=True)
    _number("fraction", fraction, 0.0, 1.0, open_low=True)
    _number("dropout", dropout, 0.0, 1.0)
    _number("timeout", timeout, 0.0, open_low=True)
    if privacy is not None and not isinstance(privacy, DP):
        raise ArgumentTypeError(f"Argument privacy should be loopml.federated.DP(epsilon=..., delta=...) or None, got {privacy!r}")
    if not isinstance(secure_aggregation, bool):
        raise ArgumentTypeError(f"Argument secure_aggregation should be True or False, got {secure_aggregation!r}")
    if secure_aggregation:  # the checks that need no partition; the clients per round are checked below
        secagg.check(clients if isinstance(clients, int) else secagg.MIN_CLIENTS, privacy)
    if eval_data is None:
        if not (isinstance(eval_fraction, float) and 0 < eval_fraction < 1):
            raise ArgumentError(f"Argument eval_fraction should be a fraction between 0 and 1 (the rows held out for the "
                                f"server's evaluation), got {eval_fraction!r}; or pass eval_data=")
        parts = split_data(ds, val=0.0, test=eval_fraction, seed=seed)
        train, held_out = parts.train, parts.test
        assert held_out is not None
    else:
        train, held_out = ds, _as_dataset(eval_data)
    _preflight(model, held_out)
    parts_ = make_partition(train, clients, partition, alpha=alpha, column=column, shards=shards, seed=seed)
    n_clients = len(parts_)
    per_round = apps.clients_per_round(fraction, n_clients)
    if min_clients > per_round:
        raise ArgumentError(f"Argument min_clients ({min_clients}) should be at most the clients asked per round "
                            f"({per_round} = fraction {fraction} x {n_clients} clients)")
    secure: dict[str, Any] = {}
    if secure_aggregation:
        secagg.check(per_round, privacy)
        secure = secagg.protocol(per_round, int(parts_.sizes.max())).to_params()
    noise: float | None = None
    if privacy is not None:
        if privacy.mechanism == "dp-sgd":  # central DP clips whole updates: any layer will do
            dp_module.check_model(model)
        else:
            noise = dp_module.central_noise(privacy, sample_rate=per_round / n_clients, rounds=rounds)
    spec, why = model_spec(model, init_args)
    if engine == "deployment" and spec is None:
        raise ArgumentError(f"The deployment engine rebuilds the model in every SuperNode from its class, and {why}; "
                            "define the model in an importable module and decorate it with @loopml.models.keep_init_args, "
                            "or pass init_args={...}")
    plan = Plan(rounds=rounds, strategy=strategy, local_epochs=local_epochs, batch_size=batch_size, lr=float(lr),
                optimizer=optimizer, momentum=float(momentum), proximal_mu=float(proximal_mu) if strategy == "fedprox" else 0.0,
                server_lr=float(server_lr), fraction=float(fraction), min_clients=min_clients, seed=seed, task=train.task,
                privacy=privacy, noise_multiplier=noise, client_eval=client_eval, dropout=float(dropout),
                timeout=float(timeout))
    folder = Path(tempfile.mkdtemp(prefix="loopml-fed-", dir=workdir))
    job = Job(folder, plan, n_clients, list(parts_.client_names), spec, model if engine != "deployment" else None)
    subsets = parts_.subsets(train)
    for i, sub in enumerate(subsets):
        apps.save_arrays(job.partition_path(i), sub.x.numpy(), sub.y.numpy())
    apps.save_arrays(job.eval_path, held_out.x.numpy(), held_out.y.numpy())
    torch.save(model.state_dict(), job.initial_path)
    job.save()

    params: dict[str, Any] = {"clients": n_clients, "partition": partition, "rounds": rounds, "strategy": strategy,
                              "local_epochs": local_epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                              "fraction": fraction, "engine": engine, "seed": seed, "eval_rows": len(held_out)}
    params.update({f"partition.{k}": v for k, v in parts_.params.items() if k not in ("how", "clients")})
    if strategy == "fedprox":
        params["proximal_mu"] = proximal_mu
    if strategy == "fedadam":
        params["server_lr"] = server_lr
    params.update(privacy.to_dict() if privacy is not None else {"privacy.mechanism": "none"})
    if noise is not None:
        params["privacy.noise_multiplier"] = noise
    params.update({"secure_aggregation": secure_aggregation, **secure})
    run = api.start_run(experiment, name=run_name or f"federated {strategy} x{n_clients}", params=params,
                        tags={"loopml.federated": "true"}, tracking_uri=tracking_uri)
    children: dict[int, Run] = {}
    try:
        _log_partition(run, parts_, folder)
        for i, sub in enumerate(subsets):
            counts = parts_.counts[i].tolist() if parts_.counts is not None else None
            child_params: dict[str, Any] = {"client": i, "client_name": parts_.client_names[i], "rows": len(sub)}
            if counts is not None:
                child_params["classes_held"] = int(sum(1 for c in counts if c))
            children[i] = api.start_run(experiment, name=f"{run.name} / {parts_.client_names[i]}", parent=run,
                                        params=child_params, tags={"loopml.federated.client": str(i)},
                                        tracking_uri=tracking_uri)
        with _Progress(rounds, progress) as bar:
            recorder = _Recorder(run, children, job, bar)
            if engine == "simulation":
                _simulate(job, recorder, secure_aggregation, workers)
            elif engine == "local":
                _run_local(job, recorder, secure_aggregation)
            else:
                _deploy(job, timeout, recorder, secure_aggregation)
        if not job.global_path.exists():
            raise FederatedError(f"The federation ended without a global model (its log: {job.events_path})")
        history = recorder.history()
        trained = sum(1 for r in recorder.rows.values() if r.get("clients_ok") and not r.get("kept_previous"))
        if trained == 0:
            reasons = sorted({str(f.get("reason", ""))[:200] for f in recorder.failures})
            raise FederatedError(f"No round of the federation had enough answers (min_clients={min_clients}); "
                                 f"{len(recorder.failures)} client failures: {'; '.join(reasons[:3])}")
        final = copy.deepcopy(model)
        final.load_state_dict(torch.load(job.global_path, weights_only=True))
        epsilon: float | None = None
        if privacy is not None:
            if privacy.mechanism == "dp-sgd":
                epsilon = max(recorder.epsilons.values()) if recorder.epsilons else 0.0
            else:
                assert noise is not None
                epsilon = dp_module.central_epsilon(noise, per_round / n_clients, rounds, privacy.delta)
        lineage = {"rounds": rounds, "clients": n_clients, "strategy": strategy, "engine": engine,
                   "partition": parts_.params, "failures": len(recorder.failures),
                   "secure_aggregation": {"protocol": "secagg+", **secure} if secure_aggregation else None,
                   "privacy": None if privacy is None else {**privacy.to_dict(), "privacy.epsilon_spent": epsilon}}
        summary = {"final_" + k.removeprefix("central_"): float(v) for k, v in history.iloc[-1].items()
                   if str(k).startswith("central_") and isinstance(v, (int, float, np.floating))}
        summary["clients_failed_total"] = len(recorder.failures)
        if epsilon is not None:
            summary["epsilon_spent"] = epsilon
        run.log(summary)
        tags = {"privacy.mechanism": privacy.mechanism if privacy else "none"}
        if privacy is not None and epsilon is not None:
            tags.update({"privacy.epsilon": f"{epsilon:.4g}", "privacy.delta": f"{privacy.delta:.3g}"})
        run.set_tags(tags)
        result = FederatedResult(
            model=final, history=history, epsilon=epsilon, delta=privacy.delta if privacy else None,
            mechanism=privacy.mechanism if privacy else None, run_id=run.id, experiment=experiment, partitions=parts_,
            clients=n_clients, rounds=rounds, strategy=strategy, failures=len(recorder.failures),
            seconds=time.time() - started, tracking_uri=tracking_uri, lineage=lineage,
            _input_example=train.x[: min(8, len(train))], _train=train,
        )
        for child in children.values():
            child.finish()
        run.finish()
    except BaseException:
        for child in children.values():
            if child.is_open:
                child.finish("FAILED")
        if run.is_open:
            run.finish("FAILED")
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if register is not None:
        result.register(register)
    return result


def _preflight(model: nn.Module, data: Dataset) -> None:
    """One forward pass of two rows before any engine starts: a model that does not take the data fails here, clearly."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(data.x[:2])
    except Exception as exc:  # any error of the user's forward is reported with the shapes involved
        raise ArgumentError(f"Argument model should take the data's rows: model(x[:2]) with x of shape "
                            f"{tuple(data.x.shape[1:])} per row failed: {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if data.task == "classification" and data.class_names is not None:
        if out.ndim != 2 or out.shape[1] < len(data.class_names):
            raise ArgumentError(f"Argument model should output one score per class ({len(data.class_names)}), "
                                f"got outputs of shape {tuple(out.shape)}")


def _log_partition(run: Run, parts: Partitions, folder: Path) -> None:
    """The partition's statistics (JSON) and its clients x classes picture (PNG) as the run's artifacts."""
    out = folder / "partition"
    out.mkdir()
    (out / "partition.json").write_text(json.dumps(parts.to_dict(), allow_nan=False), encoding="utf-8")
    parts.plot().savefig(out / "partition.png", dpi=100, bbox_inches="tight")  # a bare Figure: pyplot never holds it
    run.log_artifact(out, "federated")
