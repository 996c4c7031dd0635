"""ops.metric: the per-dimension metric fitted on gold pairs, against loops in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from culturesim_ray.ops.metric import (
    DimensionMetric,
    blend,
    blended_matrix,
    fit_dimension_weights,
    pair_moments,
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
    np.testing.assert_allclose(s[ia, ib], zscore(x.sum(1)) + 0.5 * zscore(x @ w),
                               rtol=1e-9, atol=1e-9)
    assert (np.diag(s) > s[ia, ib].max()).all()
    np.testing.assert_array_equal(zscore(np.full(4, 2.0)), np.zeros(4))
    with pytest.raises(ValueError, match="5 weights"):
        blended_matrix(rng.normal(size=(7, 6)), w, 0.5)


def test_pair_moments_equal_the_pairs_mean_and_sd_in_float64():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(23, 6)) + 0.3  # not centred: the mean matters
    v = rng.normal(size=6)
    ia, ib = np.triu_indices(23, 1)
    s = pair_products(m, ia, ib) @ v
    for rows in (4, 8192):  # in row chunks or at once
        mean, sd = pair_moments(m.astype(np.float32), v, rows=rows)
        assert mean == pytest.approx(s.mean(), rel=1e-6) and sd == pytest.approx(s.std(), rel=1e-6)
    with pytest.raises(ValueError, match="2 cultures"):
        pair_moments(m[:1], v)
    with pytest.raises(ValueError, match="6 dimensions"):
        pair_moments(m, v[:5])


def test_dimension_metric_scores_blocks_as_the_blend_of_all_pairs():
    rng = np.random.default_rng(5)
    m = rng.normal(size=(15, 8))
    w = rng.normal(size=8)
    ia, ib = np.triu_indices(15, 1)
    want = blend(pair_products(m, ia, ib), w, 0.7)
    sim = DimensionMetric(w, 0.7).fit(m)
    x = torch.from_numpy(m.astype(np.float32)) * 3.0  # the length of a row does not count
    got = torch.cat([sim(x[:6], x), sim(x[6:], x)]).double().numpy()
    np.testing.assert_allclose(got[ia, ib], want, atol=1e-5)
    np.testing.assert_allclose(got, got.T, atol=1e-5)
    # every pair alike in the metric's term (w = 0): the blend is z(cosine) alone
    flat = DimensionMetric(np.zeros(8), 0.7).fit(m)
    np.testing.assert_allclose(flat(x, x).double().numpy()[ia, ib],
                               zscore(pair_products(m, ia, ib).sum(1)), atol=1e-5)
    with pytest.raises(ValueError, match="fitted"):
        DimensionMetric(w, 0.7)(x, x)
    with pytest.raises(ValueError, match="finite"):
        DimensionMetric(np.array([1.0, np.nan]), 0.5)
    assert sim.key != DimensionMetric(w, 0.5).key


def test_blended_matrix_of_some_cultures_standardised_over_all_of_them():
    rng = np.random.default_rng(8)
    m = rng.normal(size=(15, 5)) + 0.2
    w = rng.normal(size=5)
    full = blended_matrix(m, w, 0.5)
    rows = np.array([1, 4, 5, 9, 13])
    part = blended_matrix(m[rows], w, 0.5, fit_on=m)
    ia, ib = np.triu_indices(len(rows), 1)
    np.testing.assert_allclose(part[ia, ib], full[rows][:, rows][ia, ib], rtol=1e-12,
                               atol=1e-12)
    alone = blended_matrix(m[rows], w, 0.5)  # standardised over its own pairs: other scores
    assert not np.allclose(alone[ia, ib], part[ia, ib])
