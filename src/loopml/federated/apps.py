"""The Flower apps of a federation: one ClientApp and one ServerApp for both engines.

A :class:`Job` is everything a federation needs, kept in a folder: the plan (rounds,
strategy, local training, privacy), each client's partition as an ``.npz`` file, the
held-out split the server evaluates on, the initial weights, and the model (the live
module in the simulation engine; its class and arguments, rebuilt in each process, in the
deployment engine). The ServerApp writes what happens to ``events.jsonl`` in that folder
and the global weights to ``global.pt``; the layer above (:mod:`loopml.federated.federation`)
turns the events into tracked runs, live in the simulation engine and after the run in
the deployment engine.

The module-level ``clientapp`` and ``serverapp`` are the deployment engine's components
(``loopml.federated.apps:clientapp``): they find the job from the run config's
``loopml-job`` (the folder), and a SuperNode's data from its node config's ``data-path``
(default: the job's partition ``partition-id``).
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
try:  # the `federated` extra: a missing package names the install command
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(f"Federated training needs {exc.name}: pip install 'loopml[federated]'") from exc
from torch import nn

from ..errors import ArgumentError, FederatedError
from ..models.runtime import import_class
from . import privacy
from .privacy import DP

__all__ = ["STRATEGIES", "Job", "Plan", "clientapp", "client_app", "serverapp", "server_app"]

STRATEGIES = ("fedavg", "fedprox", "fedadam")
JOB_KEY = "loopml-job"  # the run config key that names the job's folder (deployment engine)
EVENTS = "events.jsonl"
GLOBAL = "global.pt"


@dataclass(frozen=True)
class Plan:
    """How the federation trains: the settings every client and the server read."""

    rounds: int
    strategy: str = "fedavg"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    proximal_mu: float = 0.0  # FedProx's mu (Li et al. 2020)
    server_lr: float = 0.1  # FedAdam's eta
    fraction: float = 1.0  # the share of clients asked to train in a round
    min_clients: int = 1  # fewer answers than this and the round keeps the old model
    seed: int = 0
    task: str = "classification"
    privacy: DP | None = None
    noise_multiplier: float | None = None  # central DP's noise, chosen by fit from the target epsilon
    client_eval: bool = True  # each client also evaluates the global model on its held-out rows
    local_val: float = 0.1
    dropout: float = 0.0  # the chance that a client drops out of a round (a fault to rehearse with)
    timeout: float = 3600.0  # seconds the server waits for a round's answers

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["privacy"] = None if self.privacy is None else asdict(self.privacy)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        values = dict(data)
        if values.get("privacy") is not None:
            values["privacy"] = DP(**values["privacy"])
        return cls(**values)


@dataclass
class Job:
    """A federation's folder and what its apps need; ``model`` is the live template in the simulation engine."""

    folder: Path
    plan: Plan
    clients: int
    client_names: list[str]
    model_spec: dict[str, Any] | None = None
    model: nn.Module | None = field(default=None, repr=False)

    # -- files ---------------------------------------------------------------

    def partition_path(self, client: int) -> Path:
        return self.folder / f"client-{client}.npz"

    @property
    def eval_path(self) -> Path:
        return self.folder / "eval.npz"

    @property
    def initial_path(self) -> Path:
        return self.folder / "initial.pt"

    @property
    def events_path(self) -> Path:
        return self.folder / EVENTS

    @property
    def global_path(self) -> Path:
        return self.folder / GLOBAL

    def save(self) -> None:
        """Write job.json (the model travels as its class and arguments, never pickled)."""
        meta = {"plan": self.plan.to_dict(), "clients": self.clients, "client_names": self.client_names,
                "model_spec": self.model_spec}
        (self.folder / "job.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "Job":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FederatedError(f"The federation's job folder {folder} has no readable job.json: {exc}") from exc
        return cls(folder, Plan.from_dict(meta["plan"]), int(meta["clients"]), list(meta["client_names"]),
                   meta.get("model_spec"))

    # -- model and data -------------------------------------------------------

    def build_model(self) -> nn.Module:
        """A fresh copy of the model (its weights are replaced by the global ones before use)."""
        if self.model is not None:
            return copy.deepcopy(self.model)
        if self.model_spec is None:
            raise FederatedError("The federation's job has neither a model nor the model's class and arguments")
        model: nn.Module = import_class(self.model_spec["class_path"])(**self.model_spec["init_args"])
        return model

    def initial_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = torch.load(self.initial_path, weights_only=True)
        return state


def save_arrays(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez(path, x=x, y=y)


_DATA_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
_DATA_LOCK = threading.Lock()


def load_arrays(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A partition's rows, read once per process (a Ray actor or a ClientApp process runs many rounds)."""
    key = str(path)
    with _DATA_LOCK:
        if key not in _DATA_CACHE:
            try:
                with np.load(key, allow_pickle=False) as data:
                    _DATA_CACHE[key] = (torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
            except (OSError, KeyError, ValueError) as exc:
                raise FederatedError(f"Cannot read the client's data {key}: {exc}; "
                                     "a node's data-path should be an .npz file with arrays x and y") from exc
        return _DATA_CACHE[key]


_JOBS: dict[str, Job] = {}


def job_of(context: Context, job: Job | None) -> Job:
    if job is not None:
        return job
    folder = context.run_config.get(JOB_KEY)
    if not isinstance(folder, str):
        raise FederatedError(f"The run config has no {JOB_KEY!r}: start the federation with loopml.federated.fit "
                             "or `loopml federated run`, which set it")
    with _DATA_LOCK:
        if folder not in _JOBS:
            _JOBS[folder] = Job.load(folder)
        return _JOBS[folder]


# -- the client ---------------------------------------------------------------------------------------


class ClientDropout(RuntimeError):
    """The client left this round (Plan.dropout): the server counts it as a failure and goes on."""


def client_rows(job: Job, context: Context) -> tuple[int, torch.Tensor, torch.Tensor]:
    pid = int(context.node_config.get("partition-id", -1))
    path = context.node_config.get("data-path")
    if not isinstance(path, str):
        if not 0 <= pid < job.clients:
            raise FederatedError(f"This node's partition-id {pid} is not one of the job's {job.clients} clients")
        path = str(job.partition_path(pid))
    x, y = load_arrays(path)
    return pid, x, y


def local_split(n: int, plan: Plan, pid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's training and held-out rows: the same split in every round (seeded by the client)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(plan.seed * 7919 + pid))
    n_val = int(round(n * plan.local_val)) if plan.client_eval and n >= 5 else 0
    return order[n_val:], order[:n_val]


def loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "classification":
        return nn.functional.cross_entropy

    def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(out.reshape(y.shape), y)

    return mse


def make_optimizer(model: nn.Module, plan: Plan) -> torch.optim.Optimizer:
    if plan.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=plan.lr)
    return torch.optim.SGD(model.parameters(), lr=plan.lr, momentum=plan.momentum)


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, batch: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy for a classifier) of ``model`` on ``x, y``."""
    model.eval()
    criterion = loss_fn(task)
    total, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(x[i:i + batch])
            total += float(criterion(out, y[i:i + batch])) * len(out)
            if task == "classification":
                correct += int((out.argmax(1) == y[i:i + batch]).sum())
    n = max(len(x), 1)
    metrics = {"loss": total / n}
    if task == "classification":
        metrics["accuracy"] = correct / n
    return metrics


def train_plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, seed: int,
                 global_params: list[torch.Tensor] | None) -> tuple[float, int]:
    """Local epochs of minibatch training; returns the mean training loss and the steps taken.

    Batches are slices of a seeded permutation of tensors already in memory: a DataLoader's
    per-row collation costs more than the step itself on small models (the benchmark's
    plain Flower client uses one; see docs/benchmarks.md).
    """
    criterion, opt = loss_fn(plan.task), make_optimizer(model, plan)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    total, seen, steps = 0.0, 0, 0
    for _ in range(plan.local_epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), plan.batch_size):
            idx = order[i:i + plan.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x[idx]), y[idx])
            if global_params is not None:  # FedProx: (mu / 2) * ||w - w_global||^2 (Li et al. 2020)
                prox = sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params))
                loss = loss + plan.proximal_mu / 2 * prox
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
            steps += 1
    return total / max(seen, 1), steps


def train_private(model: nn.Module, x: torch.Tensor, y: torch.Tensor, plan: Plan, seed: int,
                  global_params: list[torch.Tensor] | None, state: RecordDict) -> tuple[float, int, float]:
    """DP-SGD with Opacus on this client's rows; returns the loss, the steps and the epsilon spent so far.

    The noise is chosen once, in the client's first round, to spend the target epsilon over every
    round of the plan (a client that sits rounds out spends less); the steps taken are kept in a
    :class:`~loopml.federated.privacy.Ledger` in Flower's per-node state between rounds.
    """
    dp = plan.privacy
    assert dp is not None
    sample_rate = privacy.poisson_rate(rows=len(x), batch_size=plan.batch_size)
    planned_steps = plan.rounds * plan.local_epochs * max(1, math.ceil(len(x) / plan.batch_size))
    ledger = privacy.Ledger.from_record(dict(state.config_records.get("loopml-privacy", ConfigRecord({}))))
    noise = ledger.noise if ledger.noise is not None else privacy.local_noise(dp, sample_rate=sample_rate, steps=planned_steps)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=plan.batch_size)
    opt = make_optimizer(model, plan)
    private_model, private_opt, private_loader = privacy.make_private(
        model, opt, loader, noise_multiplier=noise, max_grad_norm=dp.max_grad_norm, seed=seed)
    expected_batch = sample_rate * len(x)
    sum_loss = _sum_loss(plan.task)
    private_model.train()
    with warnings.catch_warnings():
        # Opacus's per-row gradient hooks sit on every layer, the first one included, whose inputs need no
        # gradient; torch says so at each backward. Nothing is lost: the hooks read the layer's own inputs.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        steps, total, seen = _private_epochs(private_model, private_opt, private_loader, model, plan, global_params,
                                             sum_loss, expected_batch)
    ledger.record(noise=noise, sample_rate=float(getattr(private_loader, "sample_rate", sample_rate)), steps=steps)
    state.config_records["loopml-privacy"] = ConfigRecord(ledger.to_record())
    return total / max(seen, 1), steps, ledger.epsilon(dp.delta)


def _private_epochs(private_model: nn.Module, private_opt: torch.optim.Optimizer, private_loader: Any, model: nn.Module,
                    plan: Plan, global_params: list[torch.Tensor] | None,
                    sum_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], expected_batch: float
                    ) -> tuple[int, float, int]:
    total, seen, steps = 0.0, 0, 0
    for _ in range(plan.local_epochs):
        for xb, yb in private_loader:
            # A Poisson batch may be empty; the accounting counts a noisy step for every batch, so every
            # batch takes one: the summed loss over the expected batch size is zero for an empty batch,
            # and the optimizer still adds the noise.
            private_opt.zero_grad(set_to_none=True)
            loss = sum_loss(private_model(xb), yb) / expected_batch
            loss.backward()  # type: ignore[no-untyped-call]
            private_opt.step()
            if global_params is not None:
                # FedProx's pull toward the global weights, applied after the private step: Opacus replaces
                # the gradient with the clipped, noised per-row sum, which would drop the proximal term's
                # gradient. The pull does not read the data, so it costs no privacy.
                with torch.no_grad():
                    for p, g in zip(model.parameters(), global_params):
                        p.sub_(plan.lr * plan.proximal_mu * (p - g))
            total += float(loss.detach()) * expected_batch
            seen += len(xb)
            steps += 1
    return steps, total, seen


def _sum_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "classification":
        return lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum")
    return lambda out, y: nn.functional.mse_loss(out.reshape(y.shape), y, reduction="sum")


def identity_record(pid: int, job: Job) -> ConfigRecord:
    name = job.client_names[pid] if 0 <= pid < len(job.client_names) else f"node {pid}"
    return ConfigRecord({"partition-id": pid, "name": name})


def local_update(job: Job, context: Context, weights: dict[str, torch.Tensor], config: Mapping[str, Any]
                 ) -> tuple[int, nn.Module, dict[str, float | int]]:
    """One client's round: the global ``weights`` trained on its rows; returns its partition id, the model, the metrics."""
    plan = job.plan
    pid, x, y = client_rows(job, context)
    rnd = int(config.get("server-round", 0))
    seed = plan.seed * 1_000_003 + rnd * 1009 + pid
    if plan.dropout and random.Random(seed).random() < plan.dropout:
        raise ClientDropout(f"client {pid} dropped out of round {rnd} (dropout={plan.dropout})")
    train_idx, _ = local_split(len(x), plan, pid)
    if len(train_idx) == 0:
        raise FederatedError(f"client {pid} has no rows to train on")
    xt, yt = x[train_idx], y[train_idx]
    model = job.build_model()
    model.load_state_dict(weights)
    torch.manual_seed(seed)
    mu = float(config.get("proximal-mu", 0.0))
    global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    start = time.perf_counter()
    metrics: dict[str, float | int] = {}
    if plan.privacy is not None and plan.privacy.mechanism == "dp-sgd":
        loss, steps, eps = train_private(model, xt, yt, plan, seed, global_params, context.state)
        metrics["epsilon"] = eps
    else:
        loss, steps = train_plain(model, xt, yt, plan, seed, global_params)
    metrics.update({"train_loss": loss, "steps": steps, "num-examples": len(xt),
                    "train_seconds": time.perf_counter() - start})
    if central_dp(plan):
        metrics[EQUAL_WEIGHT] = 1  # see make_strategy
    return pid, model, metrics


def local_evaluation(job: Job, context: Context, weights: dict[str, torch.Tensor]) -> tuple[int, dict[str, float | int]]:
    """The global ``weights`` on this client's held-out rows; returns its partition id and the metrics."""
    plan = job.plan
    pid, x, y = client_rows(job, context)
    _, val_idx = local_split(len(x), plan, pid)
    model = job.build_model()
    model.load_state_dict(weights)
    metrics: dict[str, float | int] = {"num-examples": len(val_idx)}
    if len(val_idx):
        metrics.update(evaluate_model(model, x[val_idx], y[val_idx], plan.task))
    else:  # too few rows to hold any out: the keys stay the same for Flower's aggregation
        metrics.update({"loss": 0.0, **({"accuracy": 0.0} if plan.task == "classification" else {})})
    if central_dp(plan):
        metrics[EQUAL_WEIGHT] = 1  # the strategy weighs answers by one key, for training and evaluation alike
    return pid, metrics


def client_app(job: Job | None = None) -> ClientApp:
    """The ClientApp: trains the global model on this client's rows, and evaluates it on its held-out rows."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        the_job = job_of(context, job)
        pid, model, metrics = local_update(the_job, context, msg.content.array_records["arrays"].to_torch_state_dict(),
                                           msg.content.config_records["config"])
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(dict(metrics)),
                              "client": identity_record(pid, the_job)})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        the_job = job_of(context, job)
        pid, metrics = local_evaluation(the_job, context, msg.content.array_records["arrays"].to_torch_state_dict())
        content = RecordDict({"metrics": MetricRecord(dict(metrics)), "client": identity_record(pid, the_job)})
        return Message(content=content, reply_to=msg)

    return app


# -- the server ---------------------------------------------------------------------------------------


def clients_per_round(fraction: float, clients: int) -> int:
    """How many clients a round asks: ``fraction`` of them, at least one (Flower's strategies sample so)."""
    return max(1, math.ceil(fraction * clients))


def central_dp(plan: Plan) -> bool:
    return plan.privacy is not None and plan.privacy.mechanism == "central"


EQUAL_WEIGHT = "equal-weight"


def make_strategy(plan: Plan, clients: int) -> Strategy:
    """Flower's strategy for ``plan.strategy``, sampling ``plan.fraction`` of the clients each round.

    Under central DP every answer weighs the same: the noise is calibrated to one clipped update
    among ``clients_per_round`` (McMahan et al. 2018), which a client weighted by its row count
    would exceed.
    """
    per_round = clients_per_round(plan.fraction, clients)
    common: dict[str, Any] = {
        "fraction_train": plan.fraction,
        "fraction_evaluate": plan.fraction if plan.client_eval else 0.0,
        "min_train_nodes": per_round,
        "min_evaluate_nodes": per_round if plan.client_eval else 0,
        "min_available_nodes": clients,
    }
    if central_dp(plan):
        common["weighted_by_key"] = EQUAL_WEIGHT
    if plan.strategy == "fedavg":
        return FedAvg(**common)
    if plan.strategy == "fedprox":
        return FedProx(**common, proximal_mu=plan.proximal_mu)
    if plan.strategy == "fedadam":
        return FedAdam(**common, eta=plan.server_lr, eta_l=plan.lr)
    raise ArgumentError(f"Argument strategy should be one of {', '.join(STRATEGIES)}, got {plan.strategy!r}")


Sink = Callable[[dict[str, Any]], None]


def failure_reason(text: str) -> str:
    """The client's own error message out of what Flower (and Ray) wrap it in: ``<class 'E'>:<'message'>``
    around a traceback, or ``... Message: message``."""
    found = re.findall(r"Message: (.+)", text)
    if found:
        return str(found[-1]).strip().removesuffix("'>")[:300]
    wrapped = re.fullmatch(r"<class '[\w.]+'>:<'(.*)'>", text.strip(), flags=re.DOTALL)
    if wrapped:
        text = wrapped.group(1)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:300]


def metric_dict(record: MetricRecord | None) -> dict[str, float]:
    if record is None:
        return {}
    return {str(k): float(v) for k, v in record.items() if isinstance(v, (int, float))}


class Tracked(Strategy):
    """Wraps a Flower strategy and reports each round's answers and failures to ``sink``.

    Flower's strategies log failures and drop them; loopml keeps each client's metrics (the
    federation's child runs), counts the failures, and keeps the previous global model for a
    round that fewer than ``plan.min_clients`` clients answered.
    """

    def __init__(self, inner: Strategy, sink: Sink, plan: Plan, per_round: int) -> None:
        self.inner, self.sink, self.plan = inner, sink, plan
        # Under central DP a round with fewer answers than asked would average fewer clipped updates than
        # the noise was calibrated for (a weaker guarantee than recorded): such a round keeps the old model.
        self.required = per_round if central_dp(plan) else plan.min_clients
        self.names: dict[int, str] = {}  # Flower's node id -> the client's name, learnt from its answers

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def _split(self, replies: Iterable[Message]) -> tuple[list[Message], list[dict[str, Any]], list[dict[str, Any]]]:
        ok, answers, failures = [], [], []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                failures.append({"node": node, "client": self.names.get(node), "reason": failure_reason(str(msg.error.reason))})
                continue
            ident = msg.content.config_records.get("client")
            pid = int(str(ident["partition-id"])) if ident is not None else -1
            name = str(ident["name"]) if ident is not None else f"node {node}"
            self.names[node] = name
            ok.append(msg)
            metrics = next(iter(msg.content.metric_records.values()), None)
            answers.append({"node": node, "client": pid, "name": name, "metrics": metric_dict(metrics)})
        return ok, answers, failures

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        ok, answers, failures = self._split(replies)
        enough = len(ok) >= self.required
        arrays, metrics = self.inner.aggregate_train(server_round, ok) if enough and ok else (None, None)
        self.sink({"event": "train", "round": server_round, "time": time.time(), "answers": answers,
                   "failures": failures, "aggregated": metric_dict(metrics), "kept_previous": arrays is None})
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        ok, answers, failures = self._split(replies)
        metrics = self.inner.aggregate_evaluate(server_round, ok) if ok else None
        self.sink({"event": "evaluate", "round": server_round, "time": time.time(), "answers": answers,
                   "failures": failures, "aggregated": metric_dict(metrics)})
        return metrics


def file_sink(job: Job, also: Sink | None) -> Sink:
    lock = threading.Lock()

    def sink(event: dict[str, Any]) -> None:
        with lock, job.events_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(event, allow_nan=False) + "\n")
        if also is not None:
            also(event)

    return sink


def server_main(grid: Grid, context: Context, job: Job, live: Sink | None = None) -> None:
    """The federation: the strategy's rounds, central evaluation, the global weights written to the job folder."""
    plan = job.plan
    sink = file_sink(job, live)
    random.seed(plan.seed)  # Flower's strategies sample clients with the random module
    model = job.build_model()
    model.load_state_dict(job.initial_state())
    strategy: Strategy = make_strategy(plan, job.clients)
    per_round = clients_per_round(plan.fraction, job.clients)
    if central_dp(plan):
        assert plan.privacy is not None and plan.noise_multiplier is not None
        strategy = privacy.central_strategy(strategy, plan.privacy, noise_multiplier=plan.noise_multiplier,
                                            clients_per_round=per_round)
    tracked = Tracked(strategy, sink, plan, per_round)
    ex, ey = load_arrays(job.eval_path)
    evaluator = job.build_model()

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        evaluator.load_state_dict(arrays.to_torch_state_dict())
        metrics: dict[str, float] = dict(evaluate_model(evaluator, ex, ey, plan.task))
        if plan.privacy is not None and plan.privacy.mechanism == "central" and plan.noise_multiplier is not None:
            metrics["epsilon"] = privacy.central_epsilon(plan.noise_multiplier, per_round / job.clients, server_round,
                                                         plan.privacy.delta) if server_round else 0.0
        sink({"event": "central", "round": server_round, "time": time.time(), "metrics": metrics})
        return MetricRecord(dict(metrics))

    config = ConfigRecord({"lr": plan.lr, "local-epochs": plan.local_epochs})
    sink({"event": "start", "time": time.time(), "clients": job.clients, "rounds": plan.rounds})
    result = tracked.start(grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=plan.rounds,
                           timeout=plan.timeout, train_config=config, evaluate_fn=central)
    final = result.arrays if len(result.arrays) else ArrayRecord(model.state_dict())
    torch.save(final.to_torch_state_dict(), job.global_path)
    sink({"event": "done", "time": time.time()})


def server_app(job: Job | None = None, live: Sink | None = None) -> ServerApp:
    """The ServerApp over ``job`` (or the run config's job folder, in the deployment engine)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        server_main(grid, context, job_of(context, job), live)

    return app


clientapp = client_app()
serverapp = server_app()
