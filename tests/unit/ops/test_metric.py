"""ops.metric: the per-dimension metric fitted on gold pairs, against loops in float64."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from culturesim_ray.ops.metric import (
    blend,
    blended_matrix,
    fit_dimension_weights,
    pair_products,
    zscore,
)


def test_pair_products_sum_to_the_cosines_of_the_means():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(6, 5)).astype(np.float32)
    ia, ib = np.triu_indices(6, 1)
    x = pair_products(m, ia, ib)
    assert x.dtype == np.float64 and x.shape == (15, 5)
    want = [float(m[a].astype(np.float64) @ m[b] / np.linalg.norm(m[a].astype(np.float64))
                  / np.linalg.norm(m[b].astype(np.float64))) for a, b in zip(ia, ib, strict=True)]
    np.testing.assert_allclose(x.sum(1), want, rtol=1e-6)


def test_weights_are_the_centred_products_against_the_gold_ranks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4))
    g = rng.normal(size=30).round(1)  # ties ranked by their average
    r = rankdata(g)
    want = [sum((x[p, i] - x[:, i].mean()) * (r[p] - r.mean()) for p in range(30))
            for i in range(4)]
    np.testing.assert_allclose(fit_dimension_weights(x, g), want, rtol=1e-12)
    with pytest.raises(ValueError, match="3 gold pairs"):
        fit_dimension_weights(x[:2], g[:2])
    with pytest.raises(ValueError, match="pairs, d"):
        fit_dimension_weights(x, g[:5])


def test_the_weights_find_the_dimension_the_gold_follows():
    rng = np.random.default_rng(2)
    m = rng.normal(size=(20, 8))
    ia, ib = np.triu_indices(20, 1)
    x = pair_products(m, ia, ib)
    gold = x[:, 3] + 0.01 * rng.normal(size=len(ia))
    w = fit_dimension_weights(x, gold)
    assert int(np.argmax(w)) == 3


def test_blend_zero_is_the_cosine_and_the_matrix_is_the_pairs_blend():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(7, 5))
    w = rng.normal(size=5)
    ia, ib = np.triu_indices(7, 1)
    x = pair_products(m, ia, ib)
    np.testing.assert_allclose(blend(x, w, 0.0), zscore(x.sum(1)))
    s = blended_matrix(m, w, 0.5)
    np.testing.assert_allclose(s, s.T)
    np.testing.assert_allclose(s[ia, ib], zscore(x.sum(1)) + 0.5 * zscore(x @ w), rtol=1e-12)
    assert (np.diag(s) > s[ia, ib].max()).all()
    np.testing.assert_array_equal(zscore(np.full(4, 2.0)), np.zeros(4))
    with pytest.raises(ValueError, match="5 weights"):
        blended_matrix(rng.normal(size=(7, 6)), w, 0.5)
