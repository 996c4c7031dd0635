"""InfoNCE (NT-Xent) with a negative bank, same-culture masking and hard negatives.

For a query q_i (L2-normalised), its positive key k_i and negatives n_j:

    loss_i = -log( exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_j w_ij exp(q_i.n_j / t)) )

temperature t (default 0.07, MoCo's). Negatives whose `neg_mask[i, j]` is
False (e.g. a queue entry of q_i's own culture: a false negative) are left
out. Hard-negative weighting (Robinson et al., 2021): w_ij proportional to
exp(beta * q_i.n_j) over the kept negatives, normalised to mean 1, so the
nearest other cultures weigh more; beta = 0 gives plain InfoNCE.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def info_nce(q: Tensor, k: Tensor, negatives: Tensor, temperature: float = 0.07,
             neg_mask: Tensor | None = None, hard_beta: float = 0.0) -> tuple[Tensor, Tensor]:
    """q, k: (B, D) normalised; negatives: (K, D) normalised; neg_mask: (B, K) bool.

    Returns (mean loss, logits (B, 1 + K) with the positive in column 0 and
    dropped negatives at -inf)."""
    if q.shape != k.shape:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must match")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ negatives.T  # (B, K)
    neg_logits = neg / temperature
    keep = torch.ones_like(neg, dtype=torch.bool) if neg_mask is None else neg_mask
    if hard_beta:
        # log of weights w_ij = n_kept * softmax_j(beta * s_ij) over kept negatives
        scores = (hard_beta * neg.detach()).masked_fill(~keep, float("-inf"))
        n_kept = keep.sum(dim=1, keepdim=True).clamp_min(1).to(neg.dtype)
        log_w = torch.log_softmax(scores, dim=1) + torch.log(n_kept)
        neg_logits = neg_logits + torch.nan_to_num(log_w, neginf=0.0)
    neg_logits = neg_logits.masked_fill(~keep, float("-inf"))
    logits = torch.cat([pos / temperature, neg_logits], dim=1)  # (B, 1 + K)
    loss = -torch.log_softmax(logits, dim=1)[:, 0]
    return loss.mean(), logits


def nt_xent_value(pos: float, negs: list[float], temperature: float) -> float:
    """The InfoNCE of one query from plain numbers: a reference for tests and docs."""
    num = math.exp(pos / temperature)
    return -math.log(num / (num + sum(math.exp(n / temperature) for n in negs)))
