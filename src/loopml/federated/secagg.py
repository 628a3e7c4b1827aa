"""Secure aggregation: the federation on Flower's SecAgg+, where the server sees only the sum of the updates.

With ``loopml.federated.fit(..., secure_aggregation=True)`` each client masks its weights
with pairwise masks agreed with its neighbours and a private mask of its own (Bell et al.
2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead"); the masks cancel
in the sum, and the shares of the keys that the clients exchange let the server remove the
masks of a client that drops out half way. The server learns the weighted average of the
models and nothing about any one of them.

What the server still sees, per client and round: its metrics (training loss, steps,
seconds, and the epsilon spent with DP-SGD), its number of training examples (the weight
of its update in the average), and which partition it holds. loopml tracks these as with
plain aggregation. What it no longer sees: each client's weights. So Flower's central DP,
which clips each update on the server, cannot be combined with SecAgg+ (``fit`` refuses it);
DP-SGD on the clients combines with it, and the two protect different things (SecAgg+ the
individual update from the server, DP the individual example from anyone who sees the model).

The price: SecAgg+ runs on integers. Each weight, times the client's share of the weight
``num_examples / max_weight``, is clipped to ``[-clipping_range, clipping_range]`` and
stochastically rounded to one of ``quantization_range`` levels, so the aggregate differs from
plain FedAvg's by at most ``clients x 2 x clipping_range / quantization_range / sum of
shares`` per weight (about 1e-5 with Flower's defaults; tests/federated/test_secagg.py
measures it). A client whose trained weights leave the clipping range fails its round with
a clear message instead of being clipped silently. Only floating-point entries of the state
dict are aggregated; integer buffers (BatchNorm's ``num_batches_tracked``) keep their initial
values. Each round also costs four exchanges instead of one (setup, share keys, masked
vectors, unmask).

SecAgg+ lives in Flower's legacy workflow: the ServerApp runs ``DefaultWorkflow`` with a
``SecAggPlusWorkflow`` over a legacy strategy in a ``LegacyContext``, and the ClientApp
answers the legacy ``FitIns``/``EvaluateIns`` behind Flower's ``secaggplus_mod``. The training
itself is :func:`loopml.federated.apps.local_update`, the same as without SecAgg+, and the
server writes the same events (``events.jsonl``) so that ``fit`` tracks both alike.

The module-level ``clientapp`` and ``serverapp`` are the deployment engine's components
(``loopml.federated.secagg:clientapp``), found from the run config as in :mod:`.apps`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import numpy as np
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAdam, FedAvg, FedProx, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from ..errors import ArgumentError, FederatedError
from . import apps
from .apps import Job, Plan, Sink
from .privacy import DP

__all__ = ["MIN_CLIENTS", "Protocol", "clientapp", "protocol", "secure_client_app", "secure_server_app",
           "secure_server_main", "serverapp"]

MIN_CLIENTS = 3  # SecAgg+ masks pairwise: with two clients each would learn the other's update from the sum
CLIPPING_RANGE = 8.0  # Flower's defaults; a weight beyond +-8 is rare and its client fails clearly (see above)
QUANTIZATION_RANGE = 2**22
WEIGHTS = "num-examples"  # the key apps' clients weight their answers by (Flower's Message-API default)


@dataclass(frozen=True)
class Protocol:
    """SecAgg+'s settings for a federation: recorded with the run, identical in fit and in the ServerApp."""

    clients_per_round: int
    num_shares: int
    reconstruction_threshold: int
    max_weight: float
    clipping_range: float = CLIPPING_RANGE
    quantization_range: int = QUANTIZATION_RANGE

    def to_params(self) -> dict[str, Any]:
        return {f"secagg.{k}": v for k, v in asdict(self).items() if k != "clients_per_round"}


def protocol(clients_per_round: int, max_rows: int) -> Protocol:
    """SecAgg+'s settings for ``clients_per_round`` clients holding at most ``max_rows`` rows each.

    Shares: every client is a neighbour of every other up to 11 clients a round (SecAgg
    proper); beyond, an odd number that grows as 2 log2(n) + 1, since SecAgg+ shows that a
    neighbourhood of O(log n) keeps the sum private and robust at a fraction of the cost
    (each client computes one pairwise mask per neighbour). Threshold: a majority of the
    shares, the bound under which a server cannot obtain both secrets of one client by
    telling its neighbours different stories about who dropped out; it also lets a round
    survive up to ``num_shares - threshold`` dropouts among a client's neighbours.
    Max weight: the largest client's rows, so that no client's share of the weight exceeds 1
    (which would push its weights out of the clipping range).
    """
    if clients_per_round < MIN_CLIENTS:
        raise ArgumentError(f"Secure aggregation needs at least {MIN_CLIENTS} clients a round, got {clients_per_round}")
    shares = clients_per_round if clients_per_round <= 11 else min(clients_per_round, 2 * math.ceil(math.log2(clients_per_round)) + 1)
    return Protocol(clients_per_round=clients_per_round, num_shares=shares, reconstruction_threshold=shares // 2 + 1,
                    max_weight=float(max(1, max_rows)))


def check(clients_per_round: int, privacy: DP | None) -> None:
    """Refuse what SecAgg+ cannot do, before any engine starts."""
    if privacy is not None and privacy.mechanism == "central":
        raise ArgumentError("Argument secure_aggregation cannot be combined with central DP (privacy=DP(..., mechanism="
                            "'central')): the server clips each client's update, and with SecAgg+ it never sees one. "
                            "Use DP-SGD on the clients with secure aggregation (privacy=DP(epsilon=...)), or one of the two")
    if clients_per_round < MIN_CLIENTS:
        raise ArgumentError(f"Argument secure_aggregation needs at least {MIN_CLIENTS} clients a round (SecAgg+ masks each "
                            f"update with its neighbours'), got {clients_per_round}; raise clients= or fraction=")


def protocol_of(job: Job) -> Protocol:
    """The job's protocol: from the clients asked per round and the largest partition in the job's folder."""
    per_round = apps.clients_per_round(job.plan.fraction, job.clients)
    rows = 0
    for i in range(job.clients):
        path = job.partition_path(i)
        if path.exists():  # a node may read its data elsewhere (data-path); the job's partition is its planned size
            with np.load(path, allow_pickle=False) as data:
                rows = max(rows, len(data["y"]))
    return protocol(per_round, rows or 1000)


# -- weights as SecAgg+'s list of arrays ------------------------------------------------------------


class Layout:
    """Which entries of the model's state dict SecAgg+ aggregates (the floating ones), in a fixed order.

    The legacy ``Parameters`` are a bare list of arrays: the names, shapes and dtypes come from
    the model, which the server and every client build the same way from the job.
    """

    def __init__(self, job: Job) -> None:
        self.base = job.initial_state()  # integer buffers keep these values (see the module's docstring)
        self.keys = [k for k, v in self.base.items() if torch.is_floating_point(v)]

    def arrays(self, state: Mapping[str, torch.Tensor]) -> NDArrays:
        return [state[k].detach().cpu().numpy() for k in self.keys]

    def state(self, arrays: NDArrays) -> dict[str, torch.Tensor]:
        if len(arrays) != len(self.keys):
            raise FederatedError(f"Secure aggregation sent {len(arrays)} arrays for a model with {len(self.keys)} "
                                 "floating-point entries: the server and the clients do not build the same model")
        state = dict(self.base)
        for key, array in zip(self.keys, arrays):
            like = self.base[key]
            state[key] = torch.from_numpy(np.asarray(array)).to(like.dtype).reshape(like.shape)
        return state


_LAYOUTS: dict[str, Layout] = {}  # by job folder (one per federation): a client answers many messages


def layout_of(job: Job) -> Layout:
    key = str(job.folder)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = Layout(job)
    return _LAYOUTS[key]


# -- the client ---------------------------------------------------------------------------------------


def _identity(pid: int, job: Job) -> dict[str, Scalar]:
    ident = apps.identity_record(pid, job)
    return {"partition-id": int(cast(int, ident["partition-id"])), "client-name": str(ident["name"])}


def _check_range(layout: Layout, state: Mapping[str, torch.Tensor], context: Context) -> None:
    mod_state = context.state.config_records.get(RECORD_KEY_STATE)
    limit = float(cast(float, mod_state["clipping_range"])) if mod_state and "clipping_range" in mod_state else CLIPPING_RANGE
    for key in layout.keys:
        peak = float(state[key].abs().max()) if state[key].numel() else 0.0
        if peak > limit:
            raise FederatedError(f"the trained weights of {key} reach {peak:.3g}, outside secure aggregation's clipping "
                                 f"range +-{limit:g}, where they would be clipped; lower lr, add weight decay, or "
                                 "train without secure_aggregation")


def secure_client_app(job: Job | None = None) -> ClientApp:
    """The ClientApp behind Flower's ``secaggplus_mod``: apps' training, answered in the legacy FitRes format.

    The mod runs the protocol's stages and calls the train handler in the third one; it reads
    the weights and the number of examples from the FitRes, masks them, and forwards the rest:
    the metrics, where the client's identity travels too (the workflow hands the strategy a
    FitRes, not the message, so a separate record would not reach it).
    """
    app = ClientApp(mods=[secaggplus_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        the_job = apps.job_of(context, job)
        layout = layout_of(the_job)
        fitins: FitIns = compat.recorddict_to_fitins(msg.content, keep_input=True)
        config = dict(fitins.config)
        config["proximal-mu"] = float(cast(float, config.get("proximal_mu", 0.0)))  # the legacy FedProx's key
        pid, model, metrics = apps.local_update(the_job, context, layout.state(parameters_to_ndarrays(fitins.parameters)),
                                                config)
        state = model.state_dict()
        _check_range(layout, state, context)
        res = FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(layout.arrays(state)),
                     num_examples=int(metrics[WEIGHTS]), metrics={**metrics, **_identity(pid, the_job)})
        return Message(content=compat.fitres_to_recorddict(res, keep_input=False), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        the_job = apps.job_of(context, job)
        ins: EvaluateIns = compat.recorddict_to_evaluateins(msg.content, keep_input=True)
        pid, metrics = apps.local_evaluation(the_job, context, layout_of(the_job).state(parameters_to_ndarrays(ins.parameters)))
        res = EvaluateRes(status=Status(Code.OK, ""), loss=float(metrics["loss"]), num_examples=int(metrics[WEIGHTS]),
                          metrics={**metrics, **_identity(pid, the_job)})
        return Message(content=compat.evaluateres_to_recorddict(res), reply_to=msg)

    return app


# -- the server ---------------------------------------------------------------------------------------


CentralEvaluation = Callable[[int, NDArrays, dict[str, Scalar]], tuple[float, dict[str, Scalar]] | None]


def legacy_strategy(plan: Plan, clients: int, initial: Parameters, evaluate_fn: CentralEvaluation) -> Strategy:
    """Flower's legacy strategy for ``plan.strategy``, with apps.make_strategy's settings."""
    per_round = apps.clients_per_round(plan.fraction, clients)

    def fit_config(server_round: int) -> dict[str, Scalar]:
        # the Message-API strategies put the round in the config themselves; apps' client seeds by it
        return {"server-round": server_round, "lr": plan.lr, "local-epochs": plan.local_epochs}

    common: dict[str, Any] = {
        "fraction_fit": plan.fraction,
        "fraction_evaluate": plan.fraction if plan.client_eval else 0.0,
        "min_fit_clients": per_round,
        "min_evaluate_clients": per_round if plan.client_eval else 0,
        "min_available_clients": clients,
        "initial_parameters": initial,
        "evaluate_fn": evaluate_fn,
        "on_fit_config_fn": fit_config,
        "on_evaluate_config_fn": lambda rnd: {"server-round": rnd},
    }
    if plan.strategy == "fedavg":
        return FedAvg(**common)
    if plan.strategy == "fedprox":
        return FedProx(**common, proximal_mu=plan.proximal_mu)
    if plan.strategy == "fedadam":
        # tau: the Message-API FedAdam's default (the legacy one's is 1e-9), so both engines' FedAdam agree
        return FedAdam(**common, eta=plan.server_lr, eta_l=plan.lr, tau=1e-3)
    raise ArgumentError(f"Argument strategy should be one of {', '.join(apps.STRATEGIES)}, got {plan.strategy!r}")


def _numbers(metrics: Mapping[str, Scalar]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "partition-id"}


def _reason(failure: BaseException | tuple[ClientProxy, Any]) -> str:
    if isinstance(failure, tuple):
        return str(getattr(failure[1].status, "message", "")) or "the client answered with an error status"
    error = failure.args[0] if failure.args else failure
    return apps.failure_reason(str(getattr(error, "reason", error)))


class TrackedLegacy(Strategy):
    """apps.Tracked for a legacy strategy: reports each round's answers and failures to ``sink``.

    The legacy workflows hand failures over as bare exceptions, without the node: the nodes
    that failed are those asked (configure_*) that did not answer, each given the round's
    reasons.
    """

    def __init__(self, inner: Strategy, sink: Sink, plan: Plan) -> None:
        self.inner, self.sink, self.plan = inner, sink, plan
        self.names: dict[int, str] = {}
        self.asked: dict[tuple[str, int], list[int]] = {}
        self.aggregated_rounds: set[int] = set()

    def __repr__(self) -> str:
        return f"TrackedLegacy({self.inner!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                      ) -> list[tuple[ClientProxy, FitIns]]:
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        self.asked[("fit", server_round)] = [proxy.node_id for proxy, _ in instructions]
        return instructions

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager
                           ) -> list[tuple[ClientProxy, EvaluateIns]]:
        instructions = self.inner.configure_evaluate(server_round, parameters, client_manager)
        self.asked[("evaluate", server_round)] = [proxy.node_id for proxy, _ in instructions]
        return instructions

    def _split(self, kind: str, server_round: int, results: list[tuple[ClientProxy, Any]],
               failures: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        answers: list[dict[str, Any]] = []
        answered: set[int] = set()
        for proxy, res in results:
            node, metrics = int(proxy.node_id), res.metrics
            pid = int(metrics.get("partition-id", -1))
            name = str(metrics.get("client-name", f"node {node}"))
            self.names[node] = name
            answered.add(node)
            answers.append({"node": node, "client": pid, "name": name,
                            "metrics": {**_numbers(metrics), WEIGHTS: float(res.num_examples)}})
        return answers, self.failed(kind, server_round, answered, [_reason(f) for f in failures])

    def failed(self, kind: str, server_round: int, answered: set[int], reasons: list[str]) -> list[dict[str, Any]]:
        missing = [n for n in self.asked.get((kind, server_round), []) if n not in answered]
        unique = list(dict.fromkeys(reasons))
        reason = unique[0] if len(unique) == 1 else "; ".join(unique) or "no answer"
        return [{"node": n, "client": self.names.get(n), "reason": reason} for n in missing]

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self.aggregated_rounds.add(server_round)
        answers, failed = self._split("fit", server_round, cast(list[tuple[ClientProxy, Any]], results), failures)
        parameters: Parameters | None = None
        if results and len(results) >= self.plan.min_clients:
            parameters, _ = self.inner.aggregate_fit(server_round, results, failures)
        aggregated = self.aggregate_metrics(answers)
        self.sink({"event": "train", "round": server_round, "time": time.time(), "answers": answers,
                   "failures": failed, "aggregated": aggregated, "kept_previous": parameters is None})
        return parameters, cast(dict[str, Scalar], aggregated)

    def aggregate_evaluate(self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
                           failures: list[tuple[ClientProxy, EvaluateRes] | BaseException]
                           ) -> tuple[float | None, dict[str, Scalar]]:
        answers, failed = self._split("evaluate", server_round, cast(list[tuple[ClientProxy, Any]], results), failures)
        aggregated = self.aggregate_metrics(answers)
        self.sink({"event": "evaluate", "round": server_round, "time": time.time(), "answers": answers,
                   "failures": failed, "aggregated": aggregated})
        return aggregated.get("loss"), cast(dict[str, Scalar], aggregated)

    @staticmethod
    def aggregate_metrics(answers: list[dict[str, Any]]) -> dict[str, float]:
        """The answers' metrics weighted by their examples, by the function the Message-API FedAvg uses."""
        records = [RecordDict({"metrics": MetricRecord(a["metrics"])}) for a in answers]
        if not records or sum(a["metrics"][WEIGHTS] for a in answers) <= 0:
            return {}
        return apps.metric_dict(aggregate_metricrecords(records, WEIGHTS))


class TrackedSecAggPlus(SecAggPlusWorkflow):
    """SecAggPlusWorkflow that reports a round the protocol halted (too few clients left to unmask).

    Flower's workflow then returns without calling the strategy: the round keeps the previous
    model, and without this the round would leave no trace in the federation's history.
    """

    def __init__(self, tracked: TrackedLegacy, proto: Protocol, timeout: float) -> None:
        super().__init__(num_shares=proto.num_shares, reconstruction_threshold=proto.reconstruction_threshold,
                         max_weight=proto.max_weight, clipping_range=proto.clipping_range,
                         quantization_range=proto.quantization_range, timeout=timeout)
        self.tracked = tracked
        self.state: WorkflowState | None = None

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        self.state = state
        return super().setup_stage(grid, context, state)

    def __call__(self, grid: Grid, context: Context) -> None:
        super().__call__(grid, context)
        rnd = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND]))
        if rnd in self.tracked.aggregated_rounds or self.state is None:
            return
        reasons = [_reason(f) for f in self.state.failures] or [
            f"secure aggregation halted: fewer than {self.state.threshold} of a client's neighbours answered"]
        failed = self.tracked.failed("fit", rnd, set(), reasons)
        self.tracked.sink({"event": "train", "round": rnd, "time": time.time(), "answers": [], "failures": failed,
                           "aggregated": {}, "kept_previous": True})


def secure_server_main(grid: Grid, context: Context, job: Job, live: Sink | None = None) -> None:
    """The federation on SecAgg+: rounds, central evaluation, the global weights written to the job folder.

    The same events as :func:`loopml.federated.apps.server_main` (``start``, ``central``,
    ``train``, ``evaluate``, ``done``), plus ``secagg`` with the protocol's settings.
    """
    plan = job.plan
    if plan.privacy is not None and plan.privacy.mechanism == "central":
        raise FederatedError("Secure aggregation cannot run with central DP: the server never sees a client's update "
                             "to clip it")
    sink = apps.file_sink(job, live)
    random.seed(plan.seed)  # Flower's client manager samples with the random module, SecAgg+ shuffles with it
    proto = protocol_of(job)
    layout = layout_of(job)
    ex, ey = apps.load_arrays(job.eval_path)
    evaluator = job.build_model()

    def central(server_round: int, arrays: NDArrays, config: dict[str, Scalar]) -> tuple[float, dict[str, Scalar]]:
        evaluator.load_state_dict(layout.state(arrays))
        metrics = apps.evaluate_model(evaluator, ex, ey, plan.task)
        sink({"event": "central", "round": server_round, "time": time.time(), "metrics": metrics})
        return metrics["loss"], dict(metrics)

    initial = ndarrays_to_parameters(layout.arrays(layout.base))
    tracked = TrackedLegacy(legacy_strategy(plan, job.clients, initial, central), sink, plan)
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=plan.rounds, round_timeout=plan.timeout),
                           strategy=tracked)
    sink({"event": "start", "time": time.time(), "clients": job.clients, "rounds": plan.rounds})
    sink({"event": "secagg", "time": time.time(), **asdict(proto)})
    DefaultWorkflow(fit_workflow=TrackedSecAggPlus(tracked, proto, plan.timeout))(grid, legacy)
    final = parameters_to_ndarrays(compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD],
                                                                    keep_input=True))
    torch.save(layout.state(final), job.global_path)
    sink({"event": "done", "time": time.time()})


def secure_server_app(job: Job | None = None, live: Sink | None = None) -> ServerApp:
    """The SecAgg+ ServerApp over ``job`` (or the run config's job folder, in the deployment engine)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        secure_server_main(grid, context, apps.job_of(context, job), live)

    return app


clientapp = secure_client_app()
serverapp = secure_server_app()
