"""Modality GNN branch (SPEC M1, M2).

GraphSAGE or GAT, `layers` (2-3) graph convolutions, each followed by
LayerNorm, Dropout and a residual skip: h <- h + dropout(norm(conv(h))).
The input is first projected to the hidden width; that projection of the
raw embedding is also returned so fusion can add it back (M2: the raw
signal reaches fusion even where the graph is poor).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, SAGEConv


class GNNBranch(nn.Module):
    """in_dim -> hidden over a graph. conv: "sage" (default) or "gat" (4 heads, concat)."""

    def __init__(self, in_dim: int, hidden: int = 256, layers: int = 2,
                 conv: Literal["sage", "gat"] = "sage", dropout: float = 0.1,
                 heads: int = 4) -> None:
        super().__init__()
        if not 1 <= layers <= 4:
            raise ValueError(f"layers must be 1..4, got {layers}")
        self.input = nn.Linear(in_dim, hidden)
        # the corpus mean of the raw embeddings, subtracted before the projection:
        # sentence/image embeddings share a large common direction, and without
        # centring every culture's vector sits in one narrow cone (cos ~0.99)
        self.register_buffer("center", torch.zeros(in_dim))
        self.convs = nn.ModuleList()
        for _ in range(layers):
            if conv == "sage":
                self.convs.append(SAGEConv(hidden, hidden))
            elif conv == "gat":
                if hidden % heads:
                    raise ValueError(f"hidden {hidden} must be divisible by heads {heads}")
                self.convs.append(GATConv(hidden, hidden // heads, heads=heads, concat=True))
            else:
                raise ValueError(f"unknown conv {conv!r} (sage or gat)")
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def project(self, x: Tensor) -> Tensor:
        """The raw embedding, centred and projected to the hidden width (M2's residual)."""
        return self.input(x - self.center)

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, in_dim), edge_index (2, E) -> (branch output (n, hidden), raw projection (n, hidden))."""
        raw = self.project(x)
        h = raw
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + self.dropout(norm(conv(h, edge_index)))
        return h, raw
