"""The MoCo momentum (EMA) update of a key encoder from the query encoder."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """target <- m * target + (1 - m) * online for parameters; buffers copied.

    m: momentum in [0, 1] (MoCo: 0.999); passed in by the loop, so a schedule
    (e.g. cosine from 0.996 to 1) lives there."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.mul_(m).add_(p_o.detach(), alpha=1.0 - m)
    for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
        b_t.copy_(b_o)
