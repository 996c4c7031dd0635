"""The paired difference of two methods' query hit rates against a float64 loop."""

from __future__ import annotations

import numpy as np
import pytest

from culturesim_ray.report.ranking import paired_rate_difference


def test_paired_rate_difference_matches_a_loop_over_the_same_resamples():
    rng = np.random.default_rng(3)
    a, b = rng.random(60) < 0.8, rng.random(60) < 0.7
    d = paired_rate_difference(a, b, n_boot=500, seed=4)
    assert d["delta"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    # float64 reference: the same multinomial draws, each resample scored by a loop
    counts = np.random.default_rng([4, 1]).multinomial(60, np.full(60, 1 / 60), size=500)
    ref = [sum(int(c) * (float(x) - float(y)) for c, x, y in zip(row, a, b, strict=True))
               / 60
           for row in counts]
    lo, hi = np.percentile(ref, [2.5, 97.5])
    assert (d["delta_lo"], d["delta_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert d["delta_lo"] <= d["delta"] <= d["delta_hi"]


def test_paired_rate_difference_width_follows_disagreement():
    same = np.r_[np.ones(40, bool), np.zeros(20, bool)]
    d = paired_rate_difference(same, same)  # identical hits: no spread at all
    assert (d["delta"], d["delta_lo"], d["delta_hi"]) == (0.0, 0.0, 0.0)
    better = same.copy()
    better[40:50] = True  # the first method also answers ten more queries
    d = paired_rate_difference(better, same)
    assert d["delta"] == pytest.approx(10 / 60)
    assert 0 < d["delta_lo"] < d["delta"] < d["delta_hi"] < 0.35
    with pytest.raises(ValueError, match="hits against"):
        paired_rate_difference(better, same[:5])
