"""Items to set-level heads, dense matrices to top-k pairs, S_total over matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturesim_ray.ops.allpairs import dense_topk
from culturesim_ray.ops.pooling import pool
from culturesim_ray.ops.set_pairs import (
    combine_matrices,
    item_groups,
    matrix_table,
    pairs_table,
    set_options_used,
    topk_from_matrix,
)


def test_item_groups_match_pooling_heads_and_min_items():
    cultures = ["b", "a", "b", "c", "a", "c", "c"]
    themes = [["x"], ["x", "y"], None, ["y"], ["x"], [], ["y"]]
    vecs = np.random.default_rng(0).normal(size=(7, 4))
    for min_items in (1, 2):
        groups = item_groups(cultures, themes, min_items)
        pooled = pool(vecs, cultures, themes, min_items=min_items)
        assert list(groups) == list(pooled)
        for h, (cs, idx, labels) in groups.items():
            assert cs == pooled[h][0]
            assert [cs[j] for j in labels] == [cultures[i] for i in idx]
            assert list(idx) == sorted(idx)
    cs, idx, labels = item_groups(cultures, themes, 2)["y"]
    assert cs == ["c"] and idx.tolist() == [3, 6] and labels.tolist() == [0, 0]
    assert list(item_groups(cultures)) == ["general"]


def test_topk_from_matrix_equals_dense_topk_and_breaks_ties_low():
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xn = x / x.norm(dim=1, keepdim=True)
    v, idx = topk_from_matrix(xn @ xn.T, 4)
    rv, ridx = dense_topk(x, k=4, sim="cosine", exclude_self=True)
    assert torch.equal(idx, ridx)
    torch.testing.assert_close(v, rv.to(v.dtype))
    tied = torch.ones(3, 3, dtype=torch.float64)
    assert topk_from_matrix(tied, 2)[1].tolist() == [[1, 2], [0, 2], [0, 1]]
    with pytest.raises(ValueError, match="k=3 out of range: must be in 1..2"):
        topk_from_matrix(tied, 3)


def test_combine_matrices_pads_missing_cultures_with_zero():
    mats = {"x": (["a", "b"], np.array([[1.0, 0.5], [0.5, 1.0]])),
            "y": (["b", "c"], np.array([[1.0, 0.2], [0.2, 1.0]]))}
    cs, m = combine_matrices(mats, {"x": 0.25, "y": 0.75})
    assert cs == ["a", "b", "c"]
    np.testing.assert_allclose(m, [[0.25, 0.125, 0], [0.125, 1.0, 0.15], [0, 0.15, 0.75]])


def test_tables_and_options():
    v, idx = topk_from_matrix(torch.tensor([[1.0, 0.3], [0.3, 1.0]], dtype=torch.float64), 1)
    t = pairs_table("general", ["a", "b"], np.arange(2), v, idx, "mmd").to_pylist()
    assert [(r["culture_a"], r["culture_b"], r["rank"]) for r in t] == [("a", "b", 1),
                                                                       ("b", "a", 1)]
    assert t[0]["score"] == pytest.approx(0.3) and t[0]["similarity"] == "mmd"
    m = matrix_table(["a", "b"], np.array([[1.0, 0.3], [0.3, 1.0]])).to_pylist()
    assert [(r["culture_a"], r["culture_b"]) for r in m] == [("a", "a"), ("a", "b"), ("b", "a"),
                                                              ("b", "b")]
    assert set_options_used("mmd", {"sigma": 0.5}) == {"sigma": 0.5, "seed": 0, "sample": 2000}


@pytest.mark.parametrize("sim", ["l1", "euclidean", "poincare"])
def test_combined_block_topk_equals_the_weighted_sum_of_theme_matrices(sim):
    from culturesim_ray.ops.allpairs import dense_similarity
    from culturesim_ray.ops.set_pairs import aligned_heads, combine_matrices, combined_block_topk

    rng = np.random.default_rng(3)
    heads = {"a": ([f"c{i:02d}" for i in range(0, 30)], rng.normal(size=(30, 4)).astype(np.float32)),
             "b": ([f"c{i:02d}" for i in range(10, 40)], rng.normal(size=(30, 3)).astype(np.float32))}
    alpha = {"a": 0.3, "b": 0.7}
    mats = {t: (cs, dense_similarity(torch.from_numpy(v).double(), sim=sim).numpy())
            for t, (cs, v) in heads.items()}
    cultures, total = combine_matrices(mats, alpha)
    got_cultures, xs, masks = aligned_heads(heads, alpha)
    assert got_cultures == cultures
    v, i = combined_block_topk([torch.from_numpy(x) for x in xs], [torch.from_numpy(m) for m in masks],
                               list(alpha.values()), [sim, sim], 5, 17, 4, block_cols=7)
    ref = total.copy()
    np.fill_diagonal(ref, -np.inf)
    for r in range(5, 17):
        np.testing.assert_allclose(v[r - 5].numpy(), np.sort(ref[r])[::-1][:4], atol=1e-5)
        np.testing.assert_allclose(ref[r, i[r - 5].numpy()], v[r - 5].numpy(), atol=1e-5)
