"""Read-outs of raw item vectors that use the corpus's themes: theme-centred
culture means, and the second-order similarity of any culture x culture matrix.

Why (benchmarks/readouts.py, RESULTS "What the raw item vectors allow"): a
culture's mean item vector mixes how its items differ from other cultures'
items with which topics its items happen to cover (many dishes, few rulers).
Removing each theme's mean item first keeps only the within-topic differences.
Second-order similarity compares two cultures by how they relate to all the
others (the correlation of their similarity rows), which smooths the noise of
one pair's cosine. Pure torch, float64, any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

F64 = torch.float64


def theme_groups(themes: list[list[str] | None]) -> tuple[Tensor, list[str]]:
    """(n,) int64 group of each item (its first theme; "" for none) and the names."""
    keys = [(t[0] if t else "") for t in themes]
    names = sorted(set(keys))
    pos = {k: i for i, k in enumerate(names)}
    return torch.tensor([pos[k] for k in keys], dtype=torch.long), names


def theme_centred_means(x: Tensor, labels: Tensor, n_cultures: int, groups: Tensor) -> Tensor:
    """(C, d) float64 L2-normalised culture means of the L2-normalised items after
    each group's mean item was subtracted from that group's items. labels (n,)
    culture of each item in 0..C-1, groups (n,) its theme group (`theme_groups`).
    A culture without items gets a zero row."""
    xn = F.normalize(x.to(F64), dim=1)
    g = groups.to(x.device)
    n_groups = int(g.max()) + 1 if len(g) else 0
    sums = torch.zeros(n_groups, x.shape[1], dtype=F64, device=x.device).index_add_(0, g, xn)
    counts = torch.bincount(g, minlength=n_groups).to(F64).clamp_min(1.0)
    centred = xn - (sums / counts[:, None])[g]
    lab = labels.to(x.device)
    means = torch.zeros(n_cultures, x.shape[1], dtype=F64, device=x.device).index_add_(0, lab,
                                                                                       centred)
    return F.normalize(means, dim=1)


def second_order(s: Tensor) -> Tensor:
    """(C, C) float64: entry (a, b) is the Pearson correlation of rows a and b of the
    symmetric similarity matrix s over the other C - 2 cultures (a and b left out,
    so neither pair's own value nor the diagonal enters); 1 on the diagonal, 0
    where a row is constant. Needs C >= 4. O(C^3) time, O(C^2) memory."""
    s = s.to(F64)
    c = s.shape[0]
    if c < 4:
        raise ValueError(f"second-order similarity needs at least 4 cultures, got {c}")
    n = c - 2
    d = torch.diagonal(s)
    row = s.sum(dim=1)
    sq = (s * s).sum(dim=1)
    # sums over k not in {a, b}: full-row sums minus the a-th and b-th entries
    sum_a = row[:, None] - d[:, None] - s  # sum_k s[a, k] over k != a, b
    sum_b = sum_a.T
    sq_a = sq[:, None] - d[:, None] ** 2 - s ** 2
    sq_b = sq_a.T
    cross = s @ s.T - d[:, None] * s - s * d[None, :]  # sum_k s[a, k] s[b, k], k != a, b
    cov = cross - sum_a * sum_b / n
    var_a = (sq_a - sum_a ** 2 / n).clamp_min(0.0)
    var_b = (sq_b - sum_b ** 2 / n).clamp_min(0.0)
    denom = (var_a * var_b).sqrt()
    out = torch.where(denom > 1e-12 * max(1.0, float(s.abs().max()) ** 2),
                      cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
    out.fill_diagonal_(1.0)
    return out
