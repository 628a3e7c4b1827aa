"""Federated training: the model goes to the data, on Flower, with differential privacy from Opacus.

Each client trains the global model on its own partition; only the updates leave it and
Flower's strategy (FedAvg, FedProx, FedAdam) aggregates them. loopml adds what Flower
leaves to its users: partitions of a loopml Dataset, tracked rounds (one run for the
federation, a child run per client), a privacy budget that is accounted and recorded, and
the global model registered as a version that exports, quantizes and serves like any other.
docs/federated.md has the guide. Example::

    result = loopml.federated.fit(model, data, clients=10, partition="dirichlet", alpha=0.5, rounds=20,
                                  privacy=loopml.federated.DP(epsilon=8.0, delta=1e-5, max_grad_norm=1.0))
    result.model, result.history, result.epsilon

Needs ``pip install 'loopml[federated]'`` (Flower with its simulation engine, Opacus).
"""

from __future__ import annotations

from ..lazy import lazy_exports

_LAZY = {
    "DP": "loopml.federated.privacy",
    "FederatedResult": "loopml.federated.federation",
    "fit": "loopml.federated.federation",
    "PARTITIONS": "loopml.federated.partitions",
    "Partitions": "loopml.federated.partitions",
    "partition": "loopml.federated.partitions",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
