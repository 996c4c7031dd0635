"""Culture pooling: mean of normalised item vectors; a missing theme is absent, not zero."""

from __future__ import annotations

import numpy as np
import pytest

from culturesim_ray.ops.pooling import pool


def test_mean_of_normalised_items_per_head():
    v = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    cultures = ["A", "A", "B", "B"]
    themes = [["music"], None, ["music"], ["craft"]]
    heads = pool(v, cultures, themes)
    assert list(heads) == ["general", "craft", "music"]
    cs, m = heads["general"]
    assert cs == ["A", "B"]
    np.testing.assert_allclose(m[0], [0.5, 0.5], atol=1e-7)
    np.testing.assert_allclose(m[1], [2 ** -0.5, 2 ** -0.5], atol=1e-7)
    assert heads["craft"][0] == ["B"]  # A has no craft item: no vector, not zeros
    np.testing.assert_allclose(heads["music"][1][0], [1.0, 0.0])


def test_median_and_min_items():
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])
    heads = pool(v, ["A", "A", "A", "B"], how="median", min_items=2)
    assert heads["general"][0] == ["A"]
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(v, ["A"] * 4, how="max")


def test_running_means_over_batches_equal_pool_in_float64():
    from culturesim_ray.ops.pooling import RunningMeans

    rng = np.random.default_rng(3)
    v = rng.normal(size=(500, 7)) * rng.uniform(0.1, 9.0, size=(500, 1))  # norms differ
    cultures = [f"c{int(i)}" for i in rng.integers(0, 40, 500)]
    acc = RunningMeans()
    for lo, hi in ((0, 3), (3, 3), (3, 170), (170, 171), (171, 500)):  # an empty batch too
        acc.add(v[lo:hi], cultures[lo:hi])
    names, means = acc.result()
    want = {c: [] for c in cultures}
    for x, c in zip(v, cultures, strict=True):
        want[c].append(x / np.linalg.norm(x))
    assert names == sorted(want)
    np.testing.assert_allclose(means, [np.mean(want[c], axis=0) for c in names], atol=1e-6)
    ref_names, ref = pool(v, cultures)["general"]
    assert names == ref_names and means.dtype == np.float32
    np.testing.assert_allclose(means, ref, atol=1e-6)
    with pytest.raises(ValueError, match="vectors of 3 dimensions after 7"):
        acc.add(np.ones((2, 3)), ["c1", "c2"])
    assert RunningMeans().result()[0] == []
