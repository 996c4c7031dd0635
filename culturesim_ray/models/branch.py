"""Modality GNN branch (SPEC M1, M2).

GraphSAGE or GAT, `layers` (2-3) graph convolutions, each followed by
LayerNorm, Dropout and a residual skip: h <- h + dropout(norm(conv(h))).
The input is first projected to the hidden width; that projection of the
raw embedding is also returned so fusion can add it back (M2: the raw
signal reaches fusion even where the graph is poor).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv, HeteroConv, SAGEConv

from culturesim_ray.models.dropout import Dropout

SELF_RELATION = "similar"  # a modality's own item graph, as an edge type (m, "similar", m)


def make_conv(conv: str, hidden: int, heads: int = 4, bipartite: bool = False) -> nn.Module:
    """One hidden -> hidden graph convolution. bipartite: source and destination
    nodes may be of different types (HeteroConv), so GAT adds no self loops."""
    if conv == "sage":
        return SAGEConv((hidden, hidden) if bipartite else hidden, hidden)
    if conv == "gat":
        if hidden % heads:
            raise ValueError(f"hidden {hidden} must be divisible by heads {heads}")
        if bipartite:
            return GATConv((hidden, hidden), hidden // heads, heads=heads, concat=True,
                           add_self_loops=False)
        return GATConv(hidden, hidden // heads, heads=heads, concat=True)
    raise ValueError(f"unknown conv {conv!r} (sage or gat)")


class GNNBranch(nn.Module):
    """in_dim -> hidden over a graph. conv: "sage" (default) or "gat" (4 heads, concat)."""

    def __init__(self, in_dim: int, hidden: int = 256, layers: int = 2,
                 conv: Literal["sage", "gat"] = "sage", dropout: float = 0.1,
                 heads: int = 4, modality: str = "items") -> None:
        super().__init__()
        self.modality = modality
        if not 1 <= layers <= 4:
            raise ValueError(f"layers must be 1..4, got {layers}")
        self.input = nn.Linear(in_dim, hidden)
        # the corpus mean of the raw embeddings, subtracted before the projection:
        # sentence/image embeddings share a large common direction, and without
        # centring every culture's vector sits in one narrow cone (nearly parallel)
        self.register_buffer("center", torch.zeros(in_dim))
        self.convs = self._make_convs(conv, hidden, layers, heads)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = Dropout(dropout)

    def _make_convs(self, conv: str, hidden: int, layers: int, heads: int) -> nn.ModuleList:
        return nn.ModuleList(make_conv(conv, hidden, heads) for _ in range(layers))

    def project(self, x: Tensor) -> Tensor:
        """The raw embedding, centred and projected to the hidden width (M2's residual)."""
        return self.input(x - self.center)

    def conv_layer(self, i: int, h: Tensor, edge_index: Tensor) -> Tensor:
        """Layer i over this modality's own graph: h + dropout(norm(conv(h)))."""
        return h + self.dropout(self.norms[i](self.convs[i](h, edge_index)))

    def layer_rows(self, i: int, h: Tensor, edge_index: Tensor, rows: int) -> Tensor:
        """Layer i for the first `rows` rows alone (edges all end there; sources may
        be any row of h): h[:rows] + dropout(norm(conv((h, h[:rows])))), the same
        values as `conv_layer`'s first rows."""
        dst = h[:rows]
        return dst + self.dropout(self.norms[i](self.convs[i]((h, dst), edge_index)))

    def layer(self, i: int, states: dict[str, Tensor],
              edges: dict[tuple[str, str, str], Tensor]) -> Tensor:
        """This modality's states after layer i, given every modality's input to
        layer i and the edges by type (the interface both branch kinds share;
        this one reads only its own states and its own graph)."""
        own = (self.modality, SELF_RELATION, self.modality)
        return self.conv_layer(i, states[self.modality], edges[own])

    def forward(self, x: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, in_dim), edge_index (2, E) -> (branch output (n, hidden), raw projection (n, hidden))."""
        raw = self.project(x)
        h = raw
        for i in range(len(self.convs)):
            h = self.conv_layer(i, h, edge_index)
        return h, raw


class HeteroBranch(GNNBranch):
    """Modality `modality`'s part of the heterogeneous GNN (SPEC M3).

    Layer i is a HeteroConv over the edge types that end in this modality, summed:
    (m, "similar", m), its own item graph, and each (source, relation, m) of
    `incoming` (items of other modalities linked by artifact or a relations file).
    Then LayerNorm + Dropout + residual as in GNNBranch. The branches advance one
    layer together (`CultureSim.item_states`), so a text item's state at layer 2
    carries what the linked images held at layer 1: modalities interact inside
    the graph, not only in fusion.
    """

    def __init__(self, modality: str, in_dim: int, incoming: Sequence[tuple[str, str]] = (),
                 hidden: int = 256, layers: int = 2, conv: Literal["sage", "gat"] = "sage",
                 dropout: float = 0.1, heads: int = 4) -> None:
        self.edge_types = [(modality, SELF_RELATION, modality),
                           *[(src, rel, modality) for src, rel in incoming]]
        super().__init__(in_dim, hidden, layers, conv, dropout, heads, modality)

    def _make_convs(self, conv: str, hidden: int, layers: int, heads: int) -> nn.ModuleList:
        with warnings.catch_warnings():  # by design only this modality is a destination here
            warnings.filterwarnings("ignore", message="There exist node types")
            return nn.ModuleList(
                HeteroConv({et: make_conv(conv, hidden, heads, bipartite=True)
                            for et in self.edge_types}, aggr="sum")
                for _ in range(layers))

    def layer(self, i: int, states: dict[str, Tensor],
              edges: dict[tuple[str, str, str], Tensor]) -> Tensor:
        """This modality's states after layer i. states: every modality's input to
        layer i; edges: edge type -> (2, E) (source row, destination row). An edge
        type takes part when its source modality has states, with or without edges."""
        used = {et: edges.get(et, _NO_EDGES.to(states[self.modality].device))
                for et in self.edge_types if et[0] in states}
        out = self.convs[i](states, used)[self.modality]
        return states[self.modality] + self.dropout(self.norms[i](out))

    def conv_layer(self, i: int, h: Tensor, edge_index: Tensor) -> Tensor:
        """Layer i with this modality alone (no other modality's states): its own graph."""
        return self.layer(i, {self.modality: h}, {self.edge_types[0]: edge_index})


_NO_EDGES = torch.zeros(2, 0, dtype=torch.long)
