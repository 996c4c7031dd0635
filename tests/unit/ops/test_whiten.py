"""Within-culture whitening (`ops.whiten`) against float64 references computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturesim_ray.ops.whiten import culture_whitening, whitening, within_scatter


def _items(seed: int = 0, n_cultures: int = 6, d: int = 5):
    rng = np.random.default_rng(seed)
    culture = rng.integers(0, n_cultures, size=80)
    culture[:n_cultures] = np.arange(n_cultures)  # every culture has an item
    # culture offsets plus anisotropic within-culture spread (one direction dominates)
    x = rng.normal(size=(n_cultures, d))[culture] + rng.normal(size=(80, d)) * [4, 1, 1, .5, .2]
    return x / np.linalg.norm(x, axis=1, keepdims=True), culture


def _stats(x, culture, n_cultures):
    sums = np.zeros((n_cultures, x.shape[1]))
    np.add.at(sums, culture, x)
    return (torch.from_numpy(x.T @ x), torch.from_numpy(sums),
            torch.from_numpy(np.bincount(culture, minlength=n_cultures).astype(float)))


def test_within_scatter_is_the_pooled_covariance_around_each_culture_mean():
    x, c = _items()
    means = np.stack([x[c == k].mean(0) for k in range(6)])
    centred = x - means[c]
    ref = centred.T @ centred / len(x)
    got = within_scatter(*_stats(x, c, 6)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)
    # a culture without items (a zero count) changes nothing
    xx, sums, counts = _stats(x, c, 7)
    assert counts[6] == 0
    np.testing.assert_allclose(within_scatter(xx, sums, counts).numpy(), ref, atol=1e-12)
    with pytest.raises(ValueError, match="no items"):
        within_scatter(xx * 0, sums * 0, counts * 0)


@pytest.mark.parametrize("shrink", [0.1, 1.0, 30.0])
def test_whitening_is_the_inverse_square_root_of_the_shrunk_scatter(shrink):
    x, c = _items(1)
    s = within_scatter(*_stats(x, c, 6)).numpy()
    t = culture_whitening(*_stats(x, c, 6), shrink).numpy()
    shrunk = s + shrink * np.trace(s) / len(s) * np.eye(len(s))
    np.testing.assert_allclose(t, t.T, atol=1e-12)
    np.testing.assert_allclose(t @ shrunk @ t, np.eye(len(s)), atol=1e-10)
    assert np.all(np.linalg.eigvalsh(t) > 0)
    # the direction the items spread most along is weighed least
    top = np.linalg.eigh(s)[1][:, -1]
    low = np.linalg.eigh(s)[1][:, 0]
    assert np.linalg.norm(t @ top) < np.linalg.norm(t @ low)


def test_whitening_tends_to_the_plain_cosine_and_refuses_a_bad_shrink():
    x, c = _items(2)
    means = np.stack([x[c == k].mean(0) for k in range(6)])

    def cos(m):
        m = m / np.linalg.norm(m, axis=1, keepdims=True)
        return m @ m.T

    far = culture_whitening(*_stats(x, c, 6), 1e6).numpy()
    np.testing.assert_allclose(cos(means @ far), cos(means), atol=1e-5)
    near = culture_whitening(*_stats(x, c, 6), 0.1).numpy()
    assert np.abs(cos(means @ near) - cos(means)).max() > 1e-2
    # no spread at all (one item a culture): the identity
    one = np.eye(4)[:3]
    np.testing.assert_allclose(culture_whitening(*_stats(one, np.arange(3), 3), 30.0).numpy(),
                               np.eye(4), atol=1e-12)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="shrink must be > 0"):
            whitening(torch.eye(3, dtype=torch.float64), bad)
