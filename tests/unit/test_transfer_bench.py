"""The helpers of benchmarks/transfer.py: the permuted control, and the rule that a
fit is never scored on a set that shares a culture with it (`ops.metric`'s own
tests: tests/unit/ops/test_metric.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.transfer import permuted_gold, transfer  # noqa: E402
from culturesim_ray.ops.metric import named_pair_products  # noqa: E402


def _set(rng, names, d=16, signal=None):
    m = rng.normal(size=(len(names), d))
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            # the gold follows dimension 0's product (plus noise): a metric to find
            score = m[i, 0] * m[j, 0] + 0.05 * rng.normal() if signal else rng.normal()
            pairs.append((names[i], names[j], float(score)))
    return {"names": names, "pairs": pairs, "x": named_pair_products(names, m, pairs)}


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
