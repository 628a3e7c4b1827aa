"""Small importable graph models for the registry and serving tests (PyG layers, rebuilt by the torch format)."""

from __future__ import annotations

import torch
from torch import nn

from loopml.models import keep_init_args


@keep_init_args
class GraphNet(nn.Module):
    """Two PyG message-passing layers, ``conv`` one of ``"gcn"``, ``"sage"``, ``"gat"``: scores per node."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 8, conv: str = "gcn") -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, SAGEConv

        layer = {"gcn": GCNConv, "sage": SAGEConv, "gat": GATConv}[conv]
        self.conv1, self.conv2 = layer(n_in, hidden), layer(hidden, n_out)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x, edge_index)), edge_index)  # type: ignore[no-any-return]


@keep_init_args
class HostGraphNet(nn.Module):
    """A graph model that reads its edge index on the host (``.tolist()``): torch.export cannot trace it."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        degree = [0.0] * x.shape[0]
        for target in edge_index[1].tolist():
            degree[target] += 1.0
        return self.lin(x) + torch.tensor(degree).unsqueeze(1)  # type: ignore[no-any-return]
