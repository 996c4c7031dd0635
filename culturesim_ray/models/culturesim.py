"""The fusion model: modality branches -> culture tokens -> fusion -> heads.

Items of each modality run through their GNN branch over that modality's
item graph; the branch output plus the projection of the raw embedding (M2,
"sum" residual) is mean-pooled per culture over the items a view keeps. The
culture's modality tokens (a mask marks modalities it has no kept item of)
are fused (M4), then projected: one general embedding (M5) and one per theme
(M6), all L2-normalised.

Raw residual (M2, concatenated; `raw_weight` w): the general embedding is
[sqrt(w) * r, sqrt(1 - w) * p], where p is the projection head's output and r
the culture's raw geometry: per modality the normalised mean of its kept items'
L2-normalised input vectors, concatenated in `modalities` order, each scaled by
sqrt(share of the culture's items in that modality) (absent ones zero; the raw
part has norm 1). So the cosine of two cultures is w * (sum over shared
modalities of the raw means' cosine, weighted by how many items back each side)
+ (1 - w) * (learned cosine): one flag image does not weigh as much as sixty
texts, and the learned part is a correction to the geometry of the input
encoders, which it can only move by (1 - w), instead of replacing it. A query
of one modality is compared with the slot of that modality (`query_general`,
`slot`); two cultures whose modality shares differ are compared by
`ops.modality_cosine.ModalityCosine`, which divides the raw term by the weight of
the modalities they share (`culturesim evaluate`, `culturesim allpairs`).

Theme embeddings (`theme_raw`, `export_heads`): exported, each theme head's output
gets the same raw residual over the culture's items of that theme, [sqrt(w) r_t,
sqrt(1 - w) p_t] (r_t = 0 for a culture without such items), so the culture map
per theme compares the cultures' items of that theme. Training reads p_t alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from culturesim_ray.models.branch import SELF_RELATION, GNNBranch, HeteroBranch
from culturesim_ray.models.fusion import CrossModalFusion
from culturesim_ray.models.heads import ProjectionHead, ThemeHeads


@dataclass
class ModalityGraph:
    """One modality's items: features (n, d), edges (2, E), culture index (n,),
    per-item theme membership (n, T) bool, and edges from other modalities'
    items: (source modality, relation) -> (2, E') (source row, row here), which
    the hetero variant uses."""

    x: Tensor
    edge_index: Tensor
    culture: Tensor
    themes: Tensor
    incoming: dict[tuple[str, str], Tensor] = field(default_factory=dict)
    # (n,) bool: the items a view may pool into culture tokens (None: all). A sampled
    # mini-batch marks its seeds; their sampled neighbours only pass messages.
    pool: Tensor | None = None
    # a sampled mini-batch's rows are ordered by hop (seeds, then hop 1, ...):
    # depth_prefix[d] = how many rows lie within d hops of a seed (the last = n).
    # A layer then updates only the rows a later layer reads (see `layer_inputs`).
    depth_prefix: tuple[int, ...] | None = None

    def to(self, device: torch.device | str) -> ModalityGraph:
        """The same graph with every tensor on `device`."""
        return ModalityGraph(self.x.to(device), self.edge_index.to(device),
                             self.culture.to(device), self.themes.to(device),
                             {k: v.to(device) for k, v in self.incoming.items()},
                             None if self.pool is None else self.pool.to(device),
                             self.depth_prefix)


def edge_dict(graphs: dict[str, ModalityGraph]) -> dict[tuple[str, str, str], Tensor]:
    """Every edge of the graphs by edge type (source, relation, destination)."""
    edges = {(m, SELF_RELATION, m): g.edge_index for m, g in graphs.items()}
    for m, g in graphs.items():
        for (src, rel), ei in g.incoming.items():
            edges[(src, rel, m)] = ei
    return edges


@dataclass
class CultureSimConfig:
    in_dims: dict[str, int]
    themes: list[str] = field(default_factory=list)
    hidden: int = 128
    out: int = 64
    layers: int = 2
    conv: str = "sage"
    fusion: str = "attention"
    heads: int = 4
    dropout: float = 0.1
    # "homo": one GNN per modality over its own graph; "hetero": one graph with a
    # node type per modality, cross-modal edge types [source, relation, destination]
    graph: str = "homo"
    relations: list[list[str]] = field(default_factory=list)
    # weight of the raw residual in the general embedding (0: learned only)
    raw_weight: float = 0.0
    # the culture map's read-out (culture vs culture: evaluate, allpairs): the learned
    # part's weight as a share of its trained one, 1 - raw_weight (1: as trained;
    # `ops.modality_cosine.ModalityCosine`); training and one-item queries do not read it
    map_learned: float = 1.0
    # where > 0, the learned part's weight is instead fitted on the culture vectors so
    # that its spread over culture pairs is this share of the raw term's (`ModalityCosine`
    # learned_share); 0: map_learned as given (runs trained before it)
    map_learned_share: float = 0.0
    # the culture map reads each modality's raw slot through the within-culture
    # whitening of the run's items (`ops.whiten`, map_whitening.npz), shrunk by this
    # factor; 0: the plain cosine (runs trained before it)
    map_whiten: float = 0.0
    # theme embeddings as exported (culture map, serving): [sqrt(w) r_t, sqrt(1 - w) p_t],
    # r_t the raw slots of the culture's items carrying theme t (zero without any), p_t
    # the theme head (False: p_t alone, runs trained before); training reads p_t only
    theme_raw: bool = False

    @property
    def raw_dim(self) -> int:
        return sum(self.in_dims.values()) if self.raw_weight > 0 else 0

    def head_dim(self, head: str) -> int:
        """Dimension of a head's embedding in training: general = raw slots + projection."""
        return self.out + (self.raw_dim if head == "general" else 0)

    def has_raw(self, head: str) -> bool:
        """Whether `head`'s exported culture embeddings carry the raw slots."""
        return self.raw_weight > 0 and (head == "general" or self.theme_raw)

    def slots(self) -> dict[str, tuple[int, int]]:
        """modality -> (start, stop) columns of its raw slot, in sorted modality order."""
        return {m: (self.slot(m).start, self.slot(m).stop) for m in sorted(self.in_dims)}

    def slot(self, modality: str) -> slice:
        """Columns of the general embedding that hold `modality`'s raw mean."""
        start = 0
        for m in sorted(self.in_dims):
            if m == modality:
                return slice(start, start + self.in_dims[m])
            start += self.in_dims[m]
        raise KeyError(f"no modality {modality!r} (modalities: {sorted(self.in_dims)})")


class CultureSim(nn.Module):
    def __init__(self, cfg: CultureSimConfig) -> None:
        super().__init__()
        if not 0.0 <= cfg.raw_weight < 1.0:
            raise ValueError(f"raw_weight must be in [0, 1), got {cfg.raw_weight}")
        if not (0.0 <= cfg.map_learned and math.isfinite(cfg.map_learned)):
            raise ValueError(f"map_learned must be a finite weight >= 0, got {cfg.map_learned}")
        if not (0.0 <= cfg.map_learned_share and math.isfinite(cfg.map_learned_share)):
            raise ValueError(f"map_learned_share must be a finite share >= 0, got "
                             f"{cfg.map_learned_share}")
        if not (0.0 <= cfg.map_whiten and math.isfinite(cfg.map_whiten)):
            raise ValueError(f"map_whiten must be a finite factor >= 0, got {cfg.map_whiten}")
        self.cfg = cfg
        self.modalities = sorted(cfg.in_dims)
        if cfg.graph == "homo":
            self.branches = nn.ModuleDict({
                m: GNNBranch(d, cfg.hidden, cfg.layers, cfg.conv, cfg.dropout,  # type: ignore[arg-type]
                             modality=m)
                for m, d in cfg.in_dims.items()})
        elif cfg.graph == "hetero":
            for et in cfg.relations:
                if len(et) != 3 or et[0] not in cfg.in_dims or et[2] not in cfg.in_dims:
                    raise ValueError(f"relation {et}: expected [source, relation, destination] "
                                     f"over the modalities {sorted(cfg.in_dims)}")
            self.branches = nn.ModuleDict({
                m: HeteroBranch(m, d, [(s, r) for s, r, t in cfg.relations if t == m],
                                cfg.hidden, cfg.layers, cfg.conv, cfg.dropout)  # type: ignore[arg-type]
                for m, d in cfg.in_dims.items()})
        else:
            raise ValueError(f"unknown graph {cfg.graph!r} (homo or hetero)")
        self.fusion = CrossModalFusion(cfg.hidden, len(self.modalities), cfg.heads,
                                       cfg.fusion, cfg.dropout)  # type: ignore[arg-type]
        # culture tokens are standardised per modality across cultures (batch
        # statistics in training, running ones in eval): pooled item states share
        # a large common part (biases, LayerNorm patterns) that otherwise puts
        # every culture in one narrow cone (nearly parallel) and starves InfoNCE
        self.token_norms = nn.ModuleDict({
            m: nn.BatchNorm1d(cfg.hidden, affine=False) for m in cfg.in_dims})
        self.projection = ProjectionHead(cfg.hidden, cfg.out)
        self.theme_heads = ThemeHeads(cfg.hidden, cfg.themes, cfg.out) if cfg.themes else None

    @torch.no_grad()
    def set_centers(self, graphs: dict[str, ModalityGraph]) -> None:
        """Each branch centres its input on the mean of that modality's items."""
        self.set_center_means({m: g.x.mean(dim=0) for m, g in graphs.items()})

    @torch.no_grad()
    def set_center_means(self, means: dict[str, Tensor]) -> None:
        """Each branch centres its input on `means[modality]` (its items' mean vector)."""
        for m, mu in means.items():
            if m in self.branches:
                self.branches[m].center.copy_(mu.to(self.branches[m].center))

    def layer_inputs(self, graphs: dict[str, ModalityGraph],
                     block: int | None = None) -> dict[str, list[Tensor]]:
        """Per modality, the item states entering each conv layer, then the branch
        output: [raw projection, after layer 1, ..., after the last layer].

        block: compute each layer `block` destination items at a time, each with only
        the edges into them (exact: a node's update reads its incoming edges only),
        so memory for messages is bounded by the block's edges, not all E (the
        full-corpus forward of the export and serving state at large N).

        A sampled mini-batch (`ModalityGraph.depth_prefix`, homogeneous branches):
        only its seeds are pooled, so after layer i of L only the rows within
        L-1-i hops of a seed are read again; layer i updates just those rows, with
        just the edges into them (an edge into a row d hops out starts at most d+1
        hops out, a row the layer before kept). The seeds' states are exactly the
        untrimmed ones, and a list's tensors get shorter layer by layer."""
        present = [m for m in self.modalities if m in graphs]
        h = {m: self.branches[m].project(graphs[m].x) for m in present}
        out = {m: [h[m]] for m in present}
        edges = edge_dict(graphs)
        layers = self.cfg.layers
        for i in range(layers):  # every branch advances one layer at a time
            rows = {m: self._rows_needed(graphs[m], layers - 1 - i) for m in present}
            h = {m: self._layer(i, m, h, edges, block, rows[m]) for m in present}
            for m in present:
                out[m].append(h[m])
        return out

    def _rows_needed(self, g: ModalityGraph, hops: int) -> int | None:
        """Rows within `hops` hops of a seed (a prefix), or None: every row."""
        if g.depth_prefix is None or self.cfg.graph != "homo":
            return None  # a HeteroConv reads a modality's states as source and destination
        return g.depth_prefix[min(hops, len(g.depth_prefix) - 1)]

    def _layer(self, i: int, m: str, h: dict[str, Tensor],
               edges: dict[tuple[str, str, str], Tensor], block: int | None,
               rows: int | None = None) -> Tensor:
        n = h[m].shape[0]
        if rows is not None and rows < n:
            own = edges[(m, SELF_RELATION, m)]
            return self.branches[m].layer_rows(i, h[m], own[:, own[1] < rows], rows)
        if block is None or n <= block:
            return self.branches[m].layer(i, h, edges)

        parts = []
        for s in range(0, n, block):
            into = {t: (ei[:, (ei[1] >= s) & (ei[1] < s + block)] if t[2] == m else ei[:, :0])
                    for t, ei in edges.items()}
            parts.append(self.branches[m].layer(i, h, into)[s:s + block])
        return torch.cat(parts)

    def item_states(self, graphs: dict[str, ModalityGraph],
                    block: int | None = None) -> dict[str, Tensor]:
        """Per modality (n, hidden): branch output + raw projection."""
        return {m: states[-1] + states[0][:len(states[-1])]  # a trimmed batch: its first rows
                for m, states in self.layer_inputs(graphs, block).items()}

    def normalize_tokens(self, modality: str, tokens: Tensor) -> Tensor:
        """Standardise (n, hidden) culture tokens of one modality: batch statistics
        in training (running ones when the batch has a single culture), running
        statistics in eval."""
        norm = self.token_norms[modality]
        if norm.training and len(tokens) > 1:
            return norm(tokens)
        return nn.functional.batch_norm(tokens, norm.running_mean, norm.running_var,
                                        training=False, eps=norm.eps)

    def culture_tokens(self, states: dict[str, Tensor], graphs: dict[str, ModalityGraph],
                       n_cultures: int, keep: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(C, M, hidden) tokens and (C, M) mask from the kept items of each culture."""
        ref = next(iter(states.values()))
        totals, counts = {}, {}
        for m, s in states.items():
            # a trimmed mini-batch's states are its seeds' (its first rows, the rows
            # `pool` marks): it pools seeds only, whatever else a view keeps
            c = graphs[m].culture[:len(s)]
            if keep is not None and m in keep:
                k = keep[m][:len(s)]
                s, c = s[k], c[k]
            totals[m] = ref.new_zeros(n_cultures, self.cfg.hidden).index_add_(0, c, s)
            counts[m] = ref.new_zeros(n_cultures).index_add_(0, c, torch.ones_like(c, dtype=ref.dtype))
        return self.tokens_from_sums(totals, counts, n_cultures)

    def tokens_from_sums(self, totals: dict[str, Tensor], counts: dict[str, Tensor],
                         n_cultures: int) -> tuple[Tensor, Tensor]:
        """`culture_tokens` from each modality's per-culture sums of item states
        (C, hidden) and item counts (C,) (a modality without any: absent)."""
        ref = next(iter(totals.values()))
        cols, masks = [], []
        for m in self.modalities:
            if m not in totals:
                cols.append(ref.new_zeros(n_cultures, self.cfg.hidden))
                masks.append(torch.zeros(n_cultures, dtype=torch.bool, device=ref.device))
                continue
            present = counts[m] > 0
            idx = present.nonzero().squeeze(1)
            pooled = totals[m] / counts[m].clamp_min(1.0).unsqueeze(-1)
            cols.append(pooled.index_put((idx,), self.normalize_tokens(m, pooled[idx])))
            masks.append(present)
        tokens = torch.stack(cols, dim=1)
        mask = torch.stack(masks, dim=1)
        return tokens, mask

    def raw_vectors(self, graphs: dict[str, ModalityGraph], n_cultures: int,
                    keep: dict[str, Tensor] | None = None) -> Tensor:
        """(C, raw_dim) raw slots of every culture (see the module docstring)."""
        ref = next(iter(graphs.values())).x
        sums, counts = {}, {}
        for m, g in graphs.items():
            if m not in self.modalities:
                continue
            x, c = nn.functional.normalize(g.x, dim=1), g.culture
            if keep is not None and m in keep:
                x, c = x[keep[m]], c[keep[m]]
            sums[m] = ref.new_zeros(n_cultures, x.shape[1]).index_add_(0, c, x)
            counts[m] = ref.new_zeros(n_cultures).index_add_(0, c, torch.ones_like(c, dtype=ref.dtype))
        return self.raw_from_sums(sums, counts, n_cultures)

    def raw_from_sums(self, sums: dict[str, Tensor], counts: dict[str, Tensor],
                      n_cultures: int) -> Tensor:
        """`raw_vectors` from each modality's per-culture sums of L2-normalised item
        vectors (C, d) and item counts (C,) (a modality without any: absent)."""
        ref = next(iter(sums.values()))
        parts, n = [], []
        for m in self.modalities:
            if m not in sums:
                parts.append(ref.new_zeros(n_cultures, self.cfg.in_dims[m]))
                n.append(ref.new_zeros(n_cultures))
                continue
            parts.append(nn.functional.normalize(sums[m], dim=1))  # zero where absent
            n.append(counts[m].to(ref.dtype))
        items = torch.stack(n, dim=1)  # (C, M) items per modality
        share = (items / items.sum(dim=1, keepdim=True).clamp_min(1.0)).sqrt()  # rows of norm 1
        return torch.cat([p * share[:, j:j + 1] for j, p in enumerate(parts)], dim=1)

    def general_embedding(self, projected: Tensor, raw: Tensor | None) -> Tensor:
        """[sqrt(w) raw, sqrt(1 - w) projected], or `projected` when w = 0."""
        w = self.cfg.raw_weight
        if w <= 0:
            return projected
        return torch.cat([math.sqrt(w) * raw.to(projected.dtype),
                          math.sqrt(1.0 - w) * projected], dim=1)

    def query_general(self, fused: Tensor, modality: str, x: Tensor) -> Tensor:
        """General embeddings of one-item queries of `modality` with inputs x (B, d)."""
        return self.query_embedding(self.projection(fused), modality, x)

    def query_embedding(self, projected: Tensor, modality: str, x: Tensor) -> Tensor:
        """A head's embeddings of one-item queries of `modality` with inputs x (B, d):
        the head's output `projected` with the raw residual (x in `modality`'s slot)."""
        if self.cfg.raw_weight <= 0:
            return projected
        raw = projected.new_zeros(len(x), self.cfg.raw_dim)
        raw[:, self.cfg.slot(modality)] = nn.functional.normalize(x.to(raw.dtype), dim=1)
        return self.general_embedding(projected, raw)

    def theme_keep(self, graphs: dict[str, ModalityGraph], theme: str,
                   keep: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Per modality, the (kept) items carrying `theme`."""
        t = self.cfg.themes.index(theme)
        out = {m: g.themes[:, t].bool() for m, g in graphs.items()}
        for m in keep or {}:
            if m in out:
                out[m] = out[m] & keep[m]
        return out

    def export_heads(self, graphs: dict[str, ModalityGraph], n_cultures: int,
                     block: int | None = None) -> dict[str, Tensor]:
        """`forward` over every item (inference: the culture map, serving), each theme
        head with the raw residual of the culture's items of that theme when
        `theme_raw` (see `CultureSimConfig`)."""
        out = self.forward(graphs, n_cultures, block=block)
        if not (self.cfg.theme_raw and self.cfg.raw_weight > 0):
            return out
        for theme in self.cfg.themes:
            raw = self.raw_vectors(graphs, n_cultures, self.theme_keep(graphs, theme))
            out[theme] = self.general_embedding(out[theme], raw[out["cultures"]])
        return out

    def forward(self, graphs: dict[str, ModalityGraph], n_cultures: int,
                keep: dict[str, Tensor] | None = None,
                cultures: Tensor | None = None, block: int | None = None) -> dict[str, Tensor]:
        """Embeddings of `cultures` (default: every culture with a kept item):
        {"general": (C', out), "<theme>": (C', out)..., "gate": (C', T), "cultures": (C',)}.
        block: see `layer_inputs` (inference over a whole corpus)."""
        states = self.item_states(graphs, block)
        tokens, mask = self.culture_tokens(states, graphs, n_cultures, keep)
        raw = self.raw_vectors(graphs, n_cultures, keep) if self.cfg.raw_weight > 0 else None
        return self.heads(tokens, mask, raw, cultures)

    def heads(self, tokens: Tensor, mask: Tensor, raw: Tensor | None,
              cultures: Tensor | None = None) -> dict[str, Tensor]:
        """`forward` from every culture's tokens and mask (`tokens_from_sums`) and raw
        slots (C, raw_dim) (None when the model has no raw residual)."""
        if cultures is None:
            cultures = mask.any(dim=1).nonzero().squeeze(1)
        fused = self.fusion(tokens[cultures], mask[cultures])
        out = {"general": self.general_embedding(self.projection(fused),
                                                 None if raw is None else raw[cultures]),
               "cultures": cultures}
        if self.theme_heads is not None:
            per_theme, gate = self.theme_heads(fused)
            out.update(per_theme)
            out["gate"] = gate
        return out
