"""Cross-modal fusion of per-modality tokens (SPEC M4).

Input: tokens (B, M, H) — one per modality (text, image, sequence) — and a
mask (B, M), True where the modality is present. A missing modality is
masked out of attention and pooling: it never takes part, so zeros never
pose as data. Variants:

- "attention" (default): LayerNorm, then bi-directional cross-modal
  multi-head attention (>= 4 heads): every present modality attends to the
  other present ones (to itself only when it is alone); a learnable sigmoid
  gate per modality mixes the attended and the own token
  (g * attended + (1 - g) * token); masked mean; LayerNorm; dropout.
- "transformer": one TransformerEncoderLayer over the present tokens, masked mean.
- "mlp": masked mean of the tokens through a 2-layer MLP.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from culturesim_ray.models.dropout import Dropout


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """(B, M, H), (B, M) -> (B, H) mean over present tokens."""
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


class CrossModalFusion(nn.Module):
    def __init__(self, hidden: int, modalities: int = 3, heads: int = 4,
                 variant: Literal["attention", "transformer", "mlp"] = "attention",
                 dropout: float = 0.1) -> None:
        super().__init__()
        if variant not in ("attention", "transformer", "mlp"):
            raise ValueError(f"unknown fusion variant {variant!r}")
        self.variant = variant
        self.heads = heads
        self.norm_in = nn.LayerNorm(hidden)
        self.norm_out = nn.LayerNorm(hidden)
        self.dropout = Dropout(dropout)
        if variant == "attention":
            self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
            self.gate = nn.Parameter(torch.zeros(modalities, hidden))  # one gate per modality
            self.gate_bias = nn.Parameter(torch.zeros(modalities))
        elif variant == "transformer":
            self.encoder = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout,
                                                      batch_first=True)
        else:
            self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.last_gates: Tensor | None = None

    def gates(self, tokens: Tensor) -> Tensor:
        """(B, M, H) -> (B, M) sigmoid gates, one learnable gate per modality."""
        return torch.sigmoid((tokens * self.gate).sum(-1) + self.gate_bias)

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        if bool((~mask.any(dim=1)).any()):
            row = int((~mask.any(dim=1)).nonzero()[0, 0])
            raise ValueError(f"fusion: row {row} has no modality present")
        x = self.norm_in(tokens)
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)  # masked below as well; keeps NaN out
        if self.variant == "attention":
            b, m, _ = x.shape
            present = mask.unsqueeze(1).expand(b, m, m)  # key j present
            others = present & ~torch.eye(m, dtype=torch.bool, device=x.device)
            alone = ~others.any(-1, keepdim=True)  # no other modality: attend to itself
            allowed = torch.where(alone, present, others)
            attn_mask = (~allowed).repeat_interleave(self.heads, dim=0)  # (B*heads, M, M)
            attended, _ = self.attn(x, x, x, attn_mask=attn_mask, need_weights=False)
            g = self.gates(x).unsqueeze(-1)  # (B, M, 1)
            self.last_gates = g.squeeze(-1).detach()
            fused = masked_mean(g * attended + (1 - g) * x, mask)
        elif self.variant == "transformer":
            fused = masked_mean(self.encoder(x, src_key_padding_mask=~mask), mask)
        else:
            fused = self.mlp(masked_mean(x, mask))
        return self.dropout(self.norm_out(fused))
