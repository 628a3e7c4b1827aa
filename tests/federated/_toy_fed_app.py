"""A toy Flower app for the deployment engine's tests: no torch, so each Flower process starts fast.

The ClientApp's train handler answers with its node's partition id and node config; the
ServerApp runs one round of FedAvg over every node and writes what came back to the run
config's ``out``. The run config's ``mode`` makes the ServerApp fail on purpose (``raise``)
or never finish (``hang``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

FAILURE = "the toy ServerApp failed on purpose"

clientapp = ClientApp()


@clientapp.train()
def train(msg: Message, context: Context) -> Message:
    arrays = msg.content.array_records["arrays"]
    node = context.node_config
    metrics = MetricRecord({"partition-id": int(node["partition-id"]), "num-partitions": int(node["num-partitions"]),
                            "num-examples": 1})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


class _Recording(FedAvg):
    """FedAvg that keeps each reply's metrics, to show which nodes answered."""

    def __init__(self, nodes: int) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes)
        self.replies: list[dict[str, int]] = []

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None,
                                                                                     MetricRecord | None]:
        replies = list(replies)
        for reply in replies:
            if reply.has_content():
                metrics = reply.content.metric_records["metrics"]
                self.replies.append({k: int(v) for k, v in metrics.items()})  # type: ignore[call-overload]
        return super().aggregate_train(server_round, replies)


serverapp = ServerApp()


@serverapp.main()
def main(grid: Grid, context: Context) -> None:
    mode = str(context.run_config["mode"])
    if mode == "raise":
        raise RuntimeError(FAILURE)
    if mode == "hang":
        time.sleep(3600)  # the test's time limit must stop it
    strategy = _Recording(nodes=int(context.run_config["nodes"]))
    result = strategy.start(grid, initial_arrays=ArrayRecord([np.zeros(3)]), num_rounds=1)
    weights = result.arrays.to_numpy_ndarrays()[0].tolist()
    Path(str(context.run_config["out"])).write_text(json.dumps({"replies": strategy.replies, "weights": weights}))
