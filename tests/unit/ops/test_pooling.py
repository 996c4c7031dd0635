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
