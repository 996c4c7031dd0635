"""The fusion model: modality branches -> culture tokens -> fusion -> heads.

Items of each modality run through their GNN branch over that modality's
item graph; the branch output plus the projection of the raw embedding (M2,
"sum" residual) is mean-pooled per culture over the items a view keeps. The
culture's modality tokens (a mask marks modalities it has no kept item of)
are fused (M4), then projected: one general embedding (M5) and one per theme
(M6), all L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from culturesim_ray.models.branch import GNNBranch
from culturesim_ray.models.fusion import CrossModalFusion
from culturesim_ray.models.heads import ProjectionHead, ThemeHeads


@dataclass
class ModalityGraph:
    """One modality's items: features (n, d), edges (2, E), culture index (n,),
    and per-item theme membership (n, T) bool."""

    x: Tensor
    edge_index: Tensor
    culture: Tensor
    themes: Tensor


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


class CultureSim(nn.Module):
    def __init__(self, cfg: CultureSimConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = sorted(cfg.in_dims)
        self.branches = nn.ModuleDict({
            m: GNNBranch(d, cfg.hidden, cfg.layers, cfg.conv, cfg.dropout)  # type: ignore[arg-type]
            for m, d in cfg.in_dims.items()})
        self.fusion = CrossModalFusion(cfg.hidden, len(self.modalities), cfg.heads,
                                       cfg.fusion, cfg.dropout)  # type: ignore[arg-type]
        self.projection = ProjectionHead(cfg.hidden, cfg.out)
        self.theme_heads = ThemeHeads(cfg.hidden, cfg.themes, cfg.out) if cfg.themes else None

    def item_states(self, graphs: dict[str, ModalityGraph]) -> dict[str, Tensor]:
        """Per modality (n, hidden): branch output + raw projection."""
        out = {}
        for m in self.modalities:
            if m in graphs:
                h, raw = self.branches[m](graphs[m].x, graphs[m].edge_index)
                out[m] = h + raw
        return out

    def culture_tokens(self, states: dict[str, Tensor], graphs: dict[str, ModalityGraph],
                       n_cultures: int, keep: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(C, M, hidden) tokens and (C, M) mask from the kept items of each culture."""
        ref = next(iter(states.values()))
        tokens = ref.new_zeros(n_cultures, len(self.modalities), self.cfg.hidden)
        mask = torch.zeros(n_cultures, len(self.modalities), dtype=torch.bool, device=ref.device)
        for j, m in enumerate(self.modalities):
            if m not in states:
                continue
            s, c = states[m], graphs[m].culture
            if keep is not None and m in keep:
                s, c = s[keep[m]], c[keep[m]]
            total = ref.new_zeros(n_cultures, self.cfg.hidden).index_add_(0, c, s)
            count = ref.new_zeros(n_cultures).index_add_(0, c, torch.ones_like(c, dtype=ref.dtype))
            tokens[:, j] = total / count.clamp_min(1.0).unsqueeze(-1)
            mask[:, j] = count > 0
        return tokens, mask

    def forward(self, graphs: dict[str, ModalityGraph], n_cultures: int,
                keep: dict[str, Tensor] | None = None,
                cultures: Tensor | None = None) -> dict[str, Tensor]:
        """Embeddings of `cultures` (default: every culture with a kept item):
        {"general": (C', out), "<theme>": (C', out)..., "gate": (C', T), "cultures": (C',)}."""
        states = self.item_states(graphs)
        tokens, mask = self.culture_tokens(states, graphs, n_cultures, keep)
        if cultures is None:
            cultures = mask.any(dim=1).nonzero().squeeze(1)
        fused = self.fusion(tokens[cultures], mask[cultures])
        out = {"general": self.projection(fused), "cultures": cultures}
        if self.theme_heads is not None:
            per_theme, gate = self.theme_heads(fused)
            out.update(per_theme)
            out["gate"] = gate
        return out
