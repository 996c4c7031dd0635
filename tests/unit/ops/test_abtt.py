"""All-but-the-top (`ops.abtt`) against a direct float64 computation."""

from __future__ import annotations

import numpy as np
import pytest

from culturesim_ray.ops.abtt import Abtt, default_directions, fit_abtt, item_coords, rescore


def corpus(seed: int = 0, n: int = 300, d: int = 24):
    """Items with a shared offset and two strong directions (a 'language' each) on top
    of their own variation: what the method is for, and never all-zero."""
    rng = np.random.default_rng(seed)
    lang = rng.integers(0, 3, n)
    langs = rng.normal(0, 3.0, (3, d))
    x = rng.normal(size=(n, d)) + langs[lang] + 2.0
    return x.astype(np.float32), lang


def test_default_directions():
    assert default_directions(384) == 4 and default_directions(768) == 8
    assert default_directions(64) == 1 and default_directions(3) == 1


def test_fit_matches_the_direct_pca_blocked_or_not():
    x, _ = corpus()
    xn = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    mean = xn.mean(0)
    _, _, vt = np.linalg.svd(xn - mean, full_matrices=False)
    for block in (7, 1000):
        got = fit_abtt(x, 3, block=block)
        np.testing.assert_allclose(got.mean, mean, atol=1e-12)
        # the same subspace: the projections agree (signs of the vectors may differ)
        np.testing.assert_allclose(got.basis @ got.basis.T, vt[:3].T @ vt[:3], atol=1e-6)
    assert fit_abtt(x).basis.shape == (24, 1)  # default_directions(24)
    with pytest.raises(ValueError, match="k must be"):
        fit_abtt(x, 24)
    with pytest.raises(ValueError, match="at least 2"):
        fit_abtt(x[:1], 1)


def test_rescore_equals_the_cosine_of_the_debiased_vectors():
    x, _ = corpus(seed=1)
    abtt = fit_abtt(x, 2, block=50)
    rng = np.random.default_rng(2)
    q = (rng.normal(size=(5, x.shape[1])) + 2.0).astype(np.float32)
    xn = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    shortlist = np.argsort(-(qn @ xn.T), axis=1)[:, :9]
    sims = np.take_along_axis(qn @ xn.T, shortlist, axis=1).astype(np.float32)
    coords = item_coords(x, abtt, block=64)[shortlist]
    got = rescore(sims, coords, q, abtt)
    p = np.eye(x.shape[1]) - abtt.basis @ abtt.basis.T

    def debiased(v: np.ndarray) -> np.ndarray:
        u = (v - abtt.mean) @ p
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    want = np.einsum("bd,bkd->bk", debiased(qn), debiased(xn)[shortlist])
    np.testing.assert_allclose(got, want, atol=2e-6)  # float32 sims and coordinates


def test_removing_the_language_directions_finds_the_item_of_the_same_meaning():
    """An item and its 'translation' (the same content vector in another language's
    region) are far apart in plain cosine and nearest each other once the language
    directions are removed."""
    rng = np.random.default_rng(3)
    d, n = 32, 240
    content = rng.normal(size=(n, d))
    langs = rng.normal(0, 4.0, (2, d))
    x = np.concatenate([content + langs[0], content + langs[1]]).astype(np.float32)
    abtt = fit_abtt(x, 1)
    q = x[:n]  # each item of language 0 as the query, its twin of language 1 the answer
    other = x[n:]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    on = other / np.linalg.norm(other, axis=1, keepdims=True)
    plain = qn @ on.T
    idx = np.tile(np.arange(n), (n, 1))
    coords = item_coords(other, abtt)[idx]
    debiased = rescore(plain, coords, q, abtt)
    truth = np.arange(n)
    assert np.mean(plain.argmax(1) == truth) < np.mean(debiased.argmax(1) == truth)
    assert np.mean(debiased.argmax(1) == truth) > 0.9


def test_abtt_is_a_value():
    a = Abtt(np.zeros(3), np.eye(3)[:, :1])
    assert a.basis.shape == (3, 1)


def test_default_directions_stop_at_what_the_items_span():
    x, _ = corpus(n=3, d=400)
    assert fit_abtt(x).basis.shape == (400, 2)  # 4 by the rule, 2 spanned by 3 items
