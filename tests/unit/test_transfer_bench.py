"""The pure helpers of benchmarks/transfer.py: the fitted weights, the blend, the
permuted control and the rule that a fit is never scored on a culture it saw."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.transfer import (  # noqa: E402
    blended,
    fit_weights,
    pair_features,
    permuted_gold,
    transfer,
)


def _set(rng, names, d=16, signal=None):
    m = rng.normal(size=(len(names), d))
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            # the gold follows dimension 0's product (plus noise): a metric to find
            score = m[i, 0] * m[j, 0] + 0.05 * rng.normal() if signal else rng.normal()
            pairs.append((names[i], names[j], float(score)))
    return {"names": names, "pairs": pairs, "x": pair_features(names, m, pairs)}


def test_weights_are_the_centred_products_against_the_gold_ranks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    g = rng.normal(size=30)
    want = np.array([sum((x[p, i] - x[:, i].mean()) * (rankdata(g)[p] - 15.5)
                         for p in range(30)) for i in range(4)])
    np.testing.assert_allclose(fit_weights(x, g), want, rtol=1e-12)


def test_blend_with_b_zero_ranks_as_the_raw_cosine():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 5))
    w = rng.normal(size=5)
    assert (np.argsort(blended(x, w, 0.0)) == np.argsort(x.sum(1))).all()
    b = blended(x, w, 0.5)
    assert not (np.argsort(b) == np.argsort(x.sum(1))).all()


def test_permuted_gold_keeps_the_scores_and_moves_them_between_pairs():
    rng = np.random.default_rng(2)
    pairs = [(a, b, float(i)) for i, (a, b) in
             enumerate([(a, b) for a in "abcde" for b in "abcde" if a < b])]
    g = permuted_gold(pairs, rng)
    assert sorted(g) == sorted(p[2] for p in pairs)  # every pair exists after relabelling
    assert list(g) != [p[2] for p in pairs]


def test_transfer_finds_a_shared_metric_and_skips_sets_that_share_cultures():
    rng = np.random.default_rng(3)
    sets = {"a": _set(rng, [f"a{i}" for i in range(14)], signal=True),
            "b": _set(rng, [f"b{i}" for i in range(14)], signal=True),
            "c": _set(rng, [f"c{i}" for i in range(14)], signal=True),
            "ab": _set(rng, ["a0", "b0", "d0", "d1", "d2"], signal=True)}
    rows = transfer(sets, (0.5,), perms=10)
    single = {("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b"),
              ("c", "ab"), ("ab", "c")}
    pooled = {("b + c", "a"), ("a + c", "b"), ("a + b + ab", "c")}  # ab: one set apart
    assert {(r["fitted_on"], r["scored_on"]) for r in rows} == single | pooled
    for r in rows:
        if r["scored_on"] == "ab":  # 10 pairs: too few to ask for a gain
            continue
        c = r["b"]["0.5"]
        assert c["spearman"] > r["raw"] and c["delta"] > 0  # the metric carries over
        assert c["spearman"] > c["perm_mean"]  # and the permuted fits on average
