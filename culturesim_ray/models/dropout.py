"""Dropout with the mask drawn as uniform >= p (SPEC M1: the branches' and the
fusion's dropout).

The semantics of `nn.Dropout`: in training each element is zeroed with
probability p and the others are scaled by 1 / (1 - p); in eval it is the
identity; the draws come from torch's global generator, so a seeded run
repeats. Only the draw differs: on CPU, torch's `bernoulli_` costs several times
a uniform draw of the same size, and dropout was a visible share of a training
step's time (benchmarks/RESULTS.md, "Session 13"). No parameters or buffers:
checkpoints written with `nn.Dropout` load unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Dropout(nn.Module):
    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
