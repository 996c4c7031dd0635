"""Theme-centred means and second-order similarity against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from culturesim_ray.ops.readout import second_order, theme_centred_means, theme_groups
from culturesim_ray.report.item_methods import readout_methods


def _naive_second_order(s: np.ndarray) -> np.ndarray:
    c = len(s)
    out = np.eye(c)
    for a in range(c):
        for b in range(c):
            if a != b:
                keep = np.ones(c, bool)
                keep[[a, b]] = False
                out[a, b] = np.corrcoef(s[a, keep], s[b, keep])[0, 1]
    return out


def test_second_order_equals_the_pairwise_pearson_loop():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(9, 5))
    s = z @ z.T  # symmetric, a non-constant diagonal
    got = second_order(torch.from_numpy(s.astype(np.float32))).numpy()
    ref = _naive_second_order(s)  # float64 throughout
    np.testing.assert_allclose(got, ref, atol=1e-5)  # the float32 input rounds s
    got64 = second_order(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(got64, ref, atol=1e-10)
    np.testing.assert_allclose(got64, got64.T, atol=1e-12)


def test_second_order_constant_row_gives_zero_not_nan():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 3))
    s = z @ z.T
    s[0, 1:] = s[1:, 0] = 0.25  # culture 0 equally similar to every other
    out = second_order(torch.from_numpy(s)).numpy()
    assert np.isfinite(out).all()
    assert np.allclose(out[0, 1:], 0.0) and out[0, 0] == 1.0
    assert not np.allclose(out[1:, 1:], 0.0)


def test_second_order_needs_four_cultures():
    with pytest.raises(ValueError, match="at least 4 cultures"):
        second_order(torch.eye(3, dtype=torch.float64))


def test_theme_groups_take_the_first_theme():
    groups, names = theme_groups([["food", "arts"], None, [], ["arts"], ["food"]])
    assert names == ["", "arts", "food"]
    assert groups.tolist() == [2, 0, 0, 1, 2]


def test_theme_centred_means_equal_a_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    labels = rng.integers(0, 5, 40)
    groups = rng.integers(0, 3, 40)
    xn = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    centred = xn.copy()
    for g in range(3):
        centred[groups == g] -= xn[groups == g].mean(0)
    ref = np.stack([centred[labels == c].mean(0) for c in range(5)])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = theme_centred_means(torch.from_numpy(x), torch.from_numpy(labels),
                              5, torch.from_numpy(groups)).numpy()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, atol=1e-6)


def test_theme_centring_removes_the_topic_mix():
    """Two cultures whose items differ from the others' in the same way on each
    topic, but cover the topics in other proportions: their raw means differ,
    their theme-centred means coincide."""
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]  # orthonormal: all items of one norm
    topics = 3.0 * basis[:2]
    style = {0: basis[2], 1: basis[3]}  # cultures 0 and 1 share style 0

    def items(culture_style, topic, n):
        return topics[topic] + culture_style + 0.01 * rng.normal(size=(n, 16))

    x = np.concatenate([items(style[0], 0, 9), items(style[0], 1, 1),   # culture 0: topic 0
                        items(style[0], 0, 1), items(style[0], 1, 9),   # culture 1: topic 1
                        items(style[1], 0, 5), items(style[1], 1, 5)])  # culture 2
    labels = np.repeat([0, 0, 1, 1, 2, 2], [9, 1, 1, 9, 5, 5])
    groups = np.repeat([0, 1, 0, 1, 0, 1], [9, 1, 1, 9, 5, 5])
    tc = theme_centred_means(torch.from_numpy(x), torch.from_numpy(labels), 3,
                             torch.from_numpy(groups)).numpy()
    raw = np.stack([x[labels == c].mean(0) for c in range(3)])
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    assert raw[0] @ raw[1] < 0.9
    assert tc[0] @ tc[1] > 0.99
    assert tc[0] @ tc[2] < -0.99


def test_readout_methods_need_two_themes_and_give_symmetric_matrices():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    cultures = [f"c{i % 5}" for i in range(30)]
    logs: list[str] = []
    assert readout_methods(x, cultures, [["a"]] * 30, "items", logs.append) == []
    assert "fewer than two themes" in logs[0]
    assert readout_methods(x, cultures, None, "items", logs.append) == []
    themes = [["a"] if i % 3 else ["b"] for i in range(30)]
    methods = readout_methods(x, cultures, themes, "items", logs.append)
    assert [m.similarity for m in methods] == ["readout:theme_centred",
                                               "readout:theme_second_order"]
    for m in methods:
        names, mat = m.matrices["general"]
        assert names == sorted(set(cultures)) and mat.shape == (5, 5)
        np.testing.assert_allclose(mat, mat.T, atol=1e-12)
        assert np.isfinite(mat).all()
