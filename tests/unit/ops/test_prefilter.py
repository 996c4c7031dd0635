"""FAISS cluster pre-filtering: recall against exact, fewer pairs, exact when probing all."""

from __future__ import annotations

import torch

from culturesim_ray.ops.allpairs import blockwise_topk
from culturesim_ray.ops.prefilter import (
    build_clusters,
    prefiltered_topk,
    recall_at_k,
    sample_recall,
)


def clustered(n=3000, d=32, centers=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * 4
    return c[torch.randint(0, centers, (n,), generator=g)] + torch.randn(n, d, generator=g)


def test_probing_every_cluster_is_exact():
    x = clustered(600)
    cl = build_clusters(x, nlist=8, nprobe=8)
    v, i, stats = prefiltered_topk(x, k=5, clusters=cl)
    ev, ei = blockwise_topk(x, k=5, exclude_self=True)
    torch.testing.assert_close(v, ev, atol=1e-5, rtol=1e-5)
    assert recall_at_k(i, ei) > 0.999
    assert stats.pair_evaluations == 600 * 600


def test_high_recall_with_far_fewer_pairs():
    x = clustered()
    v, i, stats = prefiltered_topk(x, k=10, nlist=64, nprobe=6)
    assert stats.pair_reduction > 5
    exact = blockwise_topk(x, k=10, exclude_self=True)[1]
    assert recall_at_k(i, exact) > 0.95
    assert (i != torch.arange(len(x))[:, None]).all()  # never its own neighbour


def test_sample_recall_matches_full_recall():
    x = clustered(1500)
    _, i, _ = prefiltered_topk(x, k=10, nlist=32, nprobe=3)
    exact = blockwise_topk(x, k=10, exclude_self=True)[1]
    full = recall_at_k(i, exact)
    assert abs(sample_recall(x, i, 10, sample=1500) - full) < 1e-9
    assert abs(sample_recall(x, i, 10, sample=400) - full) < 0.05


def test_clusters_have_own_cluster_first():
    x = clustered(800)
    cl = build_clusters(x, nlist=16, nprobe=4)
    assert (cl.probes[:, 0] == torch.arange(16).numpy()).all()
    assert cl.probes.shape == (16, 4) and cl.assign.shape == (800,)
