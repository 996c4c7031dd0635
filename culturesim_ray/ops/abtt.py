"""The corpus's dominant directions, removed before a query meets single items
(pure numpy).

A corpus's item vectors share a few directions of large variance: the language
an item is written in (an English sentence encoder puts the French and Spanish
texts of a corpus in their own regions), the corpus's register, its commonest
topics. Two items close along those directions are alike in form more than in
what they are about, and the query score's nearest-item term (`ops.query_score`)
then answers with an item in the query's language or register. "All-but-the-top"
(Mu and Viswanath, ICLR 2018) removes them: centre the vectors on the corpus mean
and project out the top principal directions, about one per hundred dimensions.

`fit_abtt` estimates the mean and the directions from the corpus's L2-normalised
item vectors (a streaming covariance: memory D x D, whatever N); `item_coords`
gives each item the few numbers (x . mean and its coordinates on the directions)
that `rescore` needs to turn the plain cosines of a query's shortlist (what the
item index returns) into the cosines of the debiased vectors, exactly, without
the items' vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 65_536


def default_directions(dim: int) -> int:
    """The number of directions removed for vectors of `dim` dimensions: dim / 100
    (Mu and Viswanath's rule), at least 1."""
    return max(1, round(dim / 100))


@dataclass(frozen=True)
class Abtt:
    """mean (D,) of the normalised item vectors; basis (D, k): the top principal
    directions of the centred vectors, orthonormal columns."""

    mean: np.ndarray
    basis: np.ndarray


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_abtt(x: np.ndarray, k: int | None = None, block: int = BLOCK) -> Abtt:
    """Mean and top-k directions of the L2-normalised rows of x (N, D) (a memory map
    is read block by block); k None: `default_directions(D)`, at most N - 1 (the
    centred vectors span no more)."""
    n, d = x.shape
    if n < 2:
        raise ValueError(f"fit_abtt needs at least 2 items, got {n}")
    k = min(default_directions(d), n - 1) if k is None else k
    if not 1 <= k < d:
        raise ValueError(f"fit_abtt: k must be in 1..{d - 1}, got {k}")
    total, outer = np.zeros(d), np.zeros((d, d))
    for i in range(0, n, block):
        xb = _normalised(x[i:i + block])
        total += xb.sum(0)
        outer += xb.T @ xb
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)
    return Abtt(mean, vecs[:, np.argsort(vals)[::-1][:k]])


def item_coords(x: np.ndarray, abtt: Abtt, block: int = BLOCK) -> np.ndarray:
    """(N, k + 1) float32 per normalised row x: [x . mean, basis' (x - mean)]."""
    out = np.empty((len(x), abtt.basis.shape[1] + 1), np.float32)
    for i in range(0, len(x), block):
        xb = _normalised(x[i:i + block])
        out[i:i + block, 0] = xb @ abtt.mean
        out[i:i + block, 1:] = (xb - abtt.mean) @ abtt.basis
    return out


def fit_items(x: np.ndarray) -> tuple[Abtt, np.ndarray]:
    """`fit_abtt` with the default number of directions and the rows' `item_coords`:
    what a replica needs of a modality's items."""
    abtt = fit_abtt(x)
    return abtt, item_coords(x, abtt)


def rescore(sims: np.ndarray, coords: np.ndarray, queries: np.ndarray, abtt: Abtt
            ) -> np.ndarray:
    """(B, K) cosines of the debiased query and item vectors, from the plain cosines
    `sims` (B, K) of the normalised queries (B, D) with their shortlisted items and
    those items' `item_coords` (B, K, k + 1). With u = x - mean, v = q - mean and P
    the projection off the basis: Pu . Pv = x.q - x.mean - q.mean + |mean|^2 - a_x.a_q
    and |Pu|^2 = 1 - 2 x.mean + |mean|^2 - |a_x|^2 (unit x), likewise for q."""
    q = _normalised(queries)
    mm = float(abtt.mean @ abtt.mean)
    b_q = q @ abtt.mean
    a_q = (q - abtt.mean) @ abtt.basis                                   # (B, k)
    c = np.asarray(coords, np.float64)
    b_x, a_x = c[..., 0], c[..., 1:]
    dot = (np.asarray(sims, np.float64) - b_x - b_q[:, None] + mm
           - np.einsum("bkr,br->bk", a_x, a_q))
    n_x = np.sqrt(np.maximum(1.0 - 2.0 * b_x + mm - (a_x ** 2).sum(-1), 1e-12))
    n_q = np.sqrt(np.maximum(1.0 - 2.0 * b_q + mm - (a_q ** 2).sum(-1), 1e-12))
    return dot / (n_x * n_q[:, None])
