"""Blockwise top-k equals the dense top-k; bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturesim_ray.ops.allpairs import blockwise_topk, dense_topk


def data(n=203, d=24, seed=3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(6, d, generator=g) * 3
    return centers[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, d, generator=g)


def assert_same_topk(a, b, atol=1e-5):
    (va, ia), (vb, ib) = a, b
    torch.testing.assert_close(va, vb, atol=atol, rtol=1e-5)
    # indices may differ only where scores tie
    diff = ia != ib
    if diff.any():
        assert torch.allclose(va[diff], vb[diff], atol=atol)


@pytest.mark.parametrize("sim", ["cosine", "dot", "euclidean", "l1", "ndd", "per_dim", "poincare"])
@pytest.mark.parametrize(("br", "bc"), [(17, 31), (64, 64), (1000, 1000)])
def test_blockwise_equals_dense(sim, br, bc):
    x = data()
    got = blockwise_topk(x, k=7, sim=sim, block_rows=br, block_cols=bc)
    # euclidean through one GEMM: |a-b|^2 = |a|^2 + |b|^2 - 2ab rounds to ~1e-5 |a|^2,
    # and the square root turns that into ~1e-2 near distance 0 (a row against itself)
    atol = 1e-2 if sim == "euclidean" else 1e-5
    assert_same_topk(got, dense_topk(x, k=7, sim=sim), atol=atol)


def test_cosine_against_float64_numpy():
    x = data(150, 16)
    x64 = x.double().numpy()
    xn = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    s = xn @ xn.T
    np.fill_diagonal(s, -np.inf)
    want_i = np.argsort(-s, axis=1)[:, :5]
    want_v = np.take_along_axis(s, want_i, 1)
    v, i = blockwise_topk(x, k=5, exclude_self=True, block_rows=13, block_cols=29)
    np.testing.assert_allclose(v.numpy(), want_v, atol=1e-5)
    assert (i.numpy() == want_i).mean() > 0.99


def test_exclude_self_and_cross_join():
    x = data(120)
    y = data(77, seed=9)
    v, i = blockwise_topk(x, k=4, exclude_self=True, block_rows=16, block_cols=20)
    assert not (i == torch.arange(120)[:, None]).any()
    assert_same_topk((v, i), dense_topk(x, k=4, exclude_self=True))
    assert_same_topk(blockwise_topk(x, y, k=5, sim="euclidean", block_rows=33, block_cols=10),
                     dense_topk(x, y, k=5, sim="euclidean"))


def test_mahalanobis_blockwise_fits_once_on_the_data():
    x = data(90)
    got = blockwise_topk(x, k=3, sim="mahalanobis", block_rows=20, block_cols=25)
    assert_same_topk(got, dense_topk(x, k=3, sim="mahalanobis"), atol=1e-4)


@pytest.mark.parametrize(("x", "kwargs", "msg"), [
    (torch.empty(0, 4), {}, "X: no vectors"),
    (torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]), {"k": 1}, r"X: row 1 holds NaN or inf"),
    (torch.tensor([[1.0, 2.0], [float("inf"), 0.0]]), {"k": 1}, r"X: row 1 holds NaN or inf"),
    (torch.ones(3, 2), {"k": 3, "exclude_self": True}, r"k=3 out of range: must be in 1..2"),
    (torch.ones(3, 2), {"k": 0}, r"k=0 out of range"),
    (torch.ones(3, 2), {"y": torch.ones(4, 5), "k": 1}, "dimension mismatch"),
    (torch.ones(3, 2), {"sim": "cosinus", "k": 1}, "unknown similarity 'cosinus'"),
    (torch.ones(3), {"k": 1}, "expected a 2-d"),
])
def test_bad_input_is_named(x, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        blockwise_topk(x, **kwargs)


@pytest.mark.parametrize("block", [7, 32, 64, 500])
def test_symmetric_path_equals_plain_path(block):
    x = data(300, 16)
    for sim in ("cosine", "dot"):
        sym = blockwise_topk(x, k=6, sim=sim, exclude_self=True, block_rows=block, block_cols=block)
        plain = blockwise_topk(x, k=6, sim=sim, exclude_self=True, block_rows=block,
                               block_cols=block, symmetric=False)
        assert_same_topk(sym, plain)
        assert_same_topk(sym, dense_topk(x, k=6, sim=sim, exclude_self=True))


def test_column_topk_exact():
    from culturesim_ray.ops.allpairs import column_topk

    s = torch.randn(256, 100, generator=torch.Generator().manual_seed(4))
    v, i = column_topk(s, 5)
    ev, ei = torch.topk(s, 5, dim=0)
    torch.testing.assert_close(v.sort(dim=1, descending=True).values, ev.T)
    assert torch.equal(torch.gather(s.T, 1, i), v)
