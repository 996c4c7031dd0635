"""Cluster pre-filtering for all-pairs top-k with FAISS k-means (SPEC J2).

1. k-means (FAISS; on the GPU when faiss sees one) over the rows, spherical
   for cosine: `nlist` centroids (default 2 sqrt(n), at most n / 8), 10
   iterations on at most 64 sampled points per centroid (k-means dominates
   the cost; probing neighbouring clusters recovers what a rougher
   clustering splits);
2. every row is assigned to its nearest centroid; each cluster's row block is
   compared only with the rows of its `nprobe` nearest clusters (its own
   included), by the same GEMM + top-k as the exact kernel;
3. `recall_at_k` measures the result against the exact top-k on a sample.

Pair evaluations fall from n * m to about n * m * nprobe / nlist; what is
lost are neighbours that sit in a cluster outside the nprobe nearest, which
`recall_at_k` reports rather than hides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from culturesim_ray.ops import similarity as S
from culturesim_ray.ops.allpairs import blockwise_topk, check_vectors


def faiss_gpus() -> int:
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


@dataclass
class Clusters:
    centroids: np.ndarray  # (nlist, d) float32
    assign: np.ndarray  # (n,) int64: each row's cluster
    probes: np.ndarray  # (nlist, nprobe) int64: nearest clusters of each cluster, own first


def build_clusters(x: Tensor, nlist: int | None = None, nprobe: int = 8, spherical: bool = True,
                   niter: int = 10, seed: int = 0, max_train: int = 64,
                   use_gpu: bool | None = None) -> Clusters:
    """k-means over the rows of x (n, d) and each cluster's nprobe nearest clusters.

    max_train: training points per centroid sampled for k-means (FAISS's own cap).
    use_gpu: None = when faiss sees a GPU."""
    import faiss

    check_vectors(x, "X")
    n, d = x.shape
    nlist = nlist or max(1, min(int(2 * math.sqrt(n)), n // 8))
    nlist = max(1, min(nlist, n))
    nprobe = max(1, min(nprobe, nlist))
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    if spherical:
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    gpu = faiss_gpus() > 0 if use_gpu is None else use_gpu
    km = faiss.Kmeans(d, nlist, niter=niter, seed=seed, spherical=spherical, gpu=gpu,
                      max_points_per_centroid=max_train, verbose=False)
    km.train(data)
    cent = np.ascontiguousarray(km.centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(d) if spherical else faiss.IndexFlatL2(d)
    index.add(cent)
    _, assign = index.search(data, 1)
    _, probes = index.search(cent, nprobe)
    # a cluster is always among its own probes, first (duplicate centroids could hide it)
    probes = np.array([[c] + [int(p) for p in row if p != c and p >= 0][: nprobe - 1]
                       for c, row in enumerate(probes)], dtype=np.int64)
    return Clusters(cent, assign[:, 0].astype(np.int64), probes.astype(np.int64))


@dataclass
class PrefilterStats:
    nlist: int
    nprobe: int
    pair_evaluations: int
    exact_pair_evaluations: int

    @property
    def pair_reduction(self) -> float:
        return self.exact_pair_evaluations / max(1, self.pair_evaluations)


def cluster_members(cl: Clusters) -> list[np.ndarray]:
    """Row ids of each cluster, ascending."""
    order = np.argsort(cl.assign, kind="stable")
    counts = np.bincount(cl.assign, minlength=len(cl.centroids))
    return np.split(order, np.cumsum(counts)[:-1])


def topk_for_clusters(x: Tensor, cl: Clusters, cluster_ids: Sequence[int], k: int,
                      sim: Any = "cosine", block_rows: int = 4096,
                      exclude_self: bool = True) -> tuple[Tensor, Tensor, Tensor, int]:
    """Pre-filtered top-k for the rows of some clusters (one Ray task's share).
    sim: "cosine", "dot" or a similarity callable (e.g. `ModalityCosine`) that scores
    the probed candidates.

    Returns (rows (r,), scores (r, k), indices (r, k), pair evaluations). Missing
    slots (fewer than k candidates probed) hold -inf and index -1."""
    if sim == "cosine":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(S.EPS)
        sim = "dot"
    members = cluster_members(cl)
    out_rows, out_v, out_i = [], [], []
    pairs = 0
    for c in cluster_ids:
        rows = torch.from_numpy(members[c]).to(x.device)
        if rows.numel() == 0:
            continue
        cand = torch.from_numpy(np.concatenate([members[int(p)] for p in cl.probes[c]])).to(x.device)
        kk = min(k, cand.numel() - (1 if exclude_self else 0))
        y = x[cand]
        for r0 in range(0, rows.numel(), block_rows):
            rb = rows[r0:r0 + block_rows]
            v = torch.full((rb.numel(), k), float("-inf"), dtype=x.dtype, device=x.device)
            i = torch.full((rb.numel(), k), -1, dtype=torch.long, device=x.device)
            if kk >= 1:
                # own rows sit first in `cand`, in the order of `rows`: row r0 + j is cand j
                bv, bi = blockwise_topk(x[rb], y, kk, sim, block_rows=block_rows,
                                        block_cols=max(1, cand.numel()),
                                        exclude_self=exclude_self,
                                        row_offset=r0 if exclude_self else 0)
                v[:, :kk], i[:, :kk] = bv, cand[bi]
            out_rows.append(rb)
            out_v.append(v)
            out_i.append(i)
            pairs += rb.numel() * cand.numel()
    if not out_rows:
        empty = torch.empty(0, k)
        return torch.empty(0, dtype=torch.long), empty, empty.long(), 0
    return torch.cat(out_rows), torch.cat(out_v), torch.cat(out_i), pairs


def prefiltered_topk(x: Tensor, k: int = 10, sim: str = "cosine", nlist: int | None = None,
                     nprobe: int = 8, block_rows: int = 4096, exclude_self: bool = True,
                     clusters: Clusters | None = None, seed: int = 0,
                     use_gpu: bool | None = None) -> tuple[Tensor, Tensor, PrefilterStats]:
    """Approximate self-join top-k of x (n, d): each cluster against its nprobe nearest.

    Returns (scores (n, k), indices (n, k), stats). Rows whose probed clusters
    hold fewer than k candidates get -inf scores and index -1 in the missing slots.
    """
    check_vectors(x, "X")
    n = x.shape[0]
    limit = n - (1 if exclude_self else 0)
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} out of range: must be in 1..{limit}")
    if sim not in ("cosine", "dot"):
        raise ValueError(f"pre-filtering supports cosine and dot, not {sim!r}")
    cl = clusters or build_clusters(x, nlist, nprobe, spherical=sim == "cosine", seed=seed,
                                    use_gpu=use_gpu)
    rows, v, i, pairs = topk_for_clusters(x, cl, range(len(cl.centroids)), k, sim, block_rows,
                                          exclude_self)
    scores = torch.empty((n, k), dtype=x.dtype, device=x.device)
    indices = torch.empty((n, k), dtype=torch.long, device=x.device)
    scores[rows], indices[rows] = v, i
    stats = PrefilterStats(nlist=len(cl.centroids), nprobe=cl.probes.shape[1],
                           pair_evaluations=pairs, exact_pair_evaluations=n * n)
    return scores, indices, stats


def recall_at_k(approx_idx: Tensor, exact_idx: Tensor) -> float:
    """Mean share of each row's exact top-k found in its approximate top-k."""
    k = exact_idx.shape[1]
    hits = (approx_idx[:, :, None] == exact_idx[:, None, :]).any(dim=1).sum()
    return float(hits) / (exact_idx.shape[0] * k)


def sample_rows(n: int, sample: int = 1000, seed: int = 0) -> Tensor:
    """The rows `sample_recall` checks: `sample` of n at random (all when n <= sample)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: min(sample, n)]


def sample_recall(x: Tensor, approx_idx: Tensor, k: int, sim: Any = "cosine",
                  sample: int = 1000, seed: int = 0, exclude_self: bool = True) -> float:
    """recall@k of `approx_idx` against the exact top-k on `sample_rows(n, sample,
    seed)` (only those rows of approx_idx are read)."""
    rows = sample_rows(x.shape[0], sample, seed).to(x.device)
    xs = x[rows]
    if sim == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(S.EPS)
        s = xn[rows] @ xn.T
    else:
        s = (S.get(sim) if isinstance(sim, str) else sim)(xs, x)
    if exclude_self:
        s[torch.arange(len(rows), device=x.device), rows] = float("-inf")
    exact = torch.topk(s, k, dim=1).indices
    return recall_at_k(approx_idx[rows], exact)
