"""Within-culture whitening: the geometry the culture map reads a modality's raw
culture means in (`ops.modality_cosine.ModalityCosine`, `CultureSimConfig.map_whiten`).

The cosine of two culture means weighs every direction of the encoder's space alike,
also the directions along which a culture's own items spread most (topics: a person,
a dish, a place). Reading the means through

    T = (S_w + shrink * mean_eig(S_w) * I)^(-1/2)

where S_w is the pooled within-culture scatter of the L2-normalised items,

    S_w = (sum_i x_i x_i^T - sum_c s_c s_c^T / n_c) / N     (s_c: the sum of culture c's items)

weighs a direction by how far cultures differ along it against how far a culture's
items spread along it (the pooled covariance of discriminant analysis), shrunk towards
the identity (shrink -> inf: the plain cosine). No gold enters it: only the items and
their culture labels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def within_scatter(xx: Tensor, sums: Tensor, counts: Tensor) -> Tensor:
    """(d, d) float64 pooled within-culture scatter S_w from its sufficient statistics:
    xx (d, d) the sum of x x^T over the items, sums (C, d) each culture's sum of items,
    counts (C,) its item count (a culture without items is skipped)."""
    xx, sums, counts = xx.double(), sums.double(), counts.double()
    n = counts.sum()
    if n <= 0:
        raise ValueError("within_scatter: no items")
    has = counts > 0
    s = sums[has]
    between = (s / counts[has, None]).T @ s  # sum_c s_c s_c^T / n_c
    out = (xx - between) / n
    return (out + out.T) / 2


def whitening(scatter: Tensor, shrink: float) -> Tensor:
    """(d, d) float64 T = (S + shrink * mean_eig(S) * I)^(-1/2), symmetric. A scatter
    with no spread (every culture one item, or identical items) gives the identity."""
    if not shrink > 0:
        raise ValueError(f"whitening: shrink must be > 0, got {shrink}")
    ev, vecs = torch.linalg.eigh(scatter.double())
    ev = ev.clamp_min(0.0)
    floor = shrink * float(ev.mean())
    d = scatter.shape[0]
    if not floor > 0:
        return torch.eye(d, dtype=torch.float64)
    return (vecs * (ev + floor).rsqrt()) @ vecs.T


def culture_whitening(xx: Tensor, sums: Tensor, counts: Tensor, shrink: float) -> Tensor:
    """`whitening(within_scatter(xx, sums, counts), shrink)`."""
    return whitening(within_scatter(xx, sums, counts), shrink)
