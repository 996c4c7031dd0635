"""Per-modality item kNN graphs (FAISS); explicit relations are in graph/hetero.py.

`knn_edges(x, k)`: every item linked to its k most cosine-similar items
(exact FAISS inner-product search on normalised vectors), both directions
kept, weights = cosine. Edges come back as (edge_index (2, E) int64, weight
(E,) float32), the torch_geometric convention; duplicates are merged keeping
the largest weight.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def knn_edges(x: np.ndarray | Tensor, k: int = 10) -> tuple[Tensor, Tensor]:
    """Symmetric kNN graph over rows of x (n, d) by cosine similarity."""
    import faiss

    v = np.ascontiguousarray(torch.as_tensor(x).detach().cpu().numpy(), dtype=np.float32)
    n = v.shape[0]
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.long), torch.zeros(0)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    kk = min(k + 1, n)
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(v)
    sims, nbrs = index.search(v, kk)
    src = np.repeat(np.arange(n), kk)
    dst = nbrs.reshape(-1)
    w = sims.reshape(-1)
    keep = (dst != src) & (dst >= 0)
    return coalesce_max(np.concatenate([src[keep], dst[keep]]),
                        np.concatenate([dst[keep], src[keep]]),
                        np.concatenate([w[keep], w[keep]]), n)


def coalesce_max(src: np.ndarray, dst: np.ndarray, w: np.ndarray, n: int) -> tuple[Tensor, Tensor]:
    """Merge duplicate (src, dst) edges keeping the largest weight; sorted by (src, dst)."""
    key = src.astype(np.int64) * n + dst.astype(np.int64)
    order = np.lexsort((-w, key))
    key, w = key[order], w[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, w = key[first], w[first]
    ei = torch.from_numpy(np.stack([key // n, key % n]).astype(np.int64))
    return ei, torch.from_numpy(w.astype(np.float32))
