"""Projection head (SPEC M5) and theme heads with a mixture-of-experts gate (M6)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """2-layer MLP, output L2-normalised (so dot products are cosines)."""

    def __init__(self, hidden: int, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.net(x), dim=-1)


class ThemeHeads(nn.Module):
    """One projection head (sub-space) per theme plus a gating network.

    forward(x) -> (embeddings {theme: (B, out) normalised}, gate (B, T) softmax
    weights of the themes for each input: how likely the input is about each).
    The training losses read the embeddings only; the train job fits the gate
    afterwards on the items' theme tags (`serving.gate`). `add_theme` adds a head
    (and a gate row) without touching the existing heads or the backbone."""

    def __init__(self, hidden: int, themes: Sequence[str], out: int = 128) -> None:
        super().__init__()
        self.hidden, self.out = hidden, out
        self.heads = nn.ModuleDict({t: ProjectionHead(hidden, out) for t in themes})
        self.gate = nn.Linear(hidden, len(themes))

    @property
    def themes(self) -> list[str]:
        return list(self.heads.keys())

    def add_theme(self, theme: str) -> None:
        if theme in self.heads:
            raise ValueError(f"theme {theme!r} exists already")
        old = self.gate
        self.heads[theme] = ProjectionHead(self.hidden, self.out).to(old.weight.device)
        self.gate = nn.Linear(self.hidden, old.out_features + 1).to(old.weight.device)
        with torch.no_grad():  # existing themes keep their gate rows
            self.gate.weight[:-1].copy_(old.weight)
            self.gate.bias[:-1].copy_(old.bias)

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        return {t: h(x) for t, h in self.heads.items()}, torch.softmax(self.gate(x), dim=-1)
