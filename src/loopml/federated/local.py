"""The ``local`` engine: Flower's ServerApp and ClientApp in this process, the clients one after another.

Flower's simulation engine runs clients in Ray workers: it uses every core, and starting Ray
and its workers costs seconds (4-9 s measured here, plus each worker importing torch) before
the first round. A small federation (a handful of clients, a small model) is done before
that; a test suite that runs a dozen federations pays it a dozen times. This engine is the
same ServerApp and ClientApp behind Flower's own ``Grid`` interface: the ServerApp's strategy
sends its messages, each ClientApp answers in turn with its node's context kept between
rounds, and a client that raises becomes an error reply, as Flower's engines make it. It is
written here because Flower 1.42's simulation engine takes no other backend than Ray (its
``vce`` module builds a ``RayBackend`` by name).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["LocalGrid", "local_identity"]

FIRST_NODE_ID = 1000  # node ids are only names; Flower's SuperLink is node 1


class LocalGrid(Grid):
    """A Grid whose nodes are ``clients`` contexts of one ClientApp, called in this process.

    Node ``FIRST_NODE_ID + i`` has ``node_config`` ``{"partition-id": i, "num-partitions":
    clients}``, as a node of Flower's simulation engine has, and its own state across rounds.
    """

    def __init__(self, client_app: ClientApp, clients: int, *, run_id: int = 1) -> None:
        self.app = client_app
        self._run = Run.create_empty(run_id)
        self.contexts = {
            FIRST_NODE_ID + i: Context(run_id=run_id, node_id=FIRST_NODE_ID + i,
                                       node_config={"partition-id": i, "num-partitions": clients},
                                       state=RecordDict(), run_config={})
            for i in range(clients)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl,
                       group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's grids number them
            self._replies[msg.metadata.message_id] = self._answer(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _answer(self, msg: Message) -> Message:
        context = self.contexts.get(msg.metadata.dst_node_id)
        if context is None:
            reply = Message(Error(code=ErrorCode.UNKNOWN, reason=f"no node {msg.metadata.dst_node_id}"), reply_to=msg)
        else:
            try:
                # each node gets its own copy, as a serialized message would be: a strategy may send one
                # record to every node, and a ClientApp (SecAgg+'s mod) may change what it receives
                reply = copy.deepcopy(self.app(copy.deepcopy(msg), context))
            except Exception as exc:  # a client's failure is its error reply, as in Flower's engines
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc)}:<'{exc}'>"),
                                reply_to=msg)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return reply


@contextmanager
def local_identity(run_id: int = 1) -> Iterator[Context]:
    """The ServerApp's context, with Flower's process-wide task identity set for it and put back after."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    try:
        yield Context(run_id=run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                      run_config={})
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


