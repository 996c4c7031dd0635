"""Rank correlations on weighted multisets (`report.weighted`) against scipy on the
expanded data and brute-force enumeration of the pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import culturesim_ray.report.weighted as wt
from culturesim_ray.report.stats import _pair_weights
from culturesim_ray.report.weighted import (
    RankPlan,
    _Inversions,
    weighted_kendall,
    weighted_ranks,
    weighted_spearman,
)


def _brute_inversions(seq: np.ndarray, w: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(seq), 1)
    inv = seq[i] > seq[j]
    return (w[:, i[inv]] * w[:, j[inv]]).sum(1)


def test_weighted_correlations_equal_scipy_on_the_expanded_multiset():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 4, 12).astype(float)  # ties on both sides
    p = rng.integers(0, 5, 12).astype(float)
    w = rng.integers(0, 3, (20, 12)).astype(float)
    rho, ok = weighted_spearman(g, p, w)
    tau, ok2 = weighted_kendall(g, p, w)
    assert (ok == ok2).all() and ok.any()
    for b in np.flatnonzero(ok):
        gg, pp = np.repeat(g, w[b].astype(int)), np.repeat(p, w[b].astype(int))
        assert rho[b] == pytest.approx(stats.spearmanr(gg, pp).statistic)
        assert tau[b] == pytest.approx(stats.kendalltau(gg, pp).statistic)


def test_inversions_count_weighted_inversions_by_brute_force():
    rng = np.random.default_rng(3)
    for m, top in ((1, 1), (9, 1), (30, 5), (50, 1000)):
        seq = rng.integers(0, top, m)  # ties, a one-bit sequence and wide values
        w = rng.integers(0, 4, (6, m)).astype(float)
        i, j = np.triu_indices(m, 1)
        inv = seq[i] > seq[j]
        ref = (w[:, i[inv]] * w[:, j[inv]]).sum(1)
        assert np.array_equal(_Inversions(seq)(w), ref)


def test_inversions_stay_exact_past_float32s_integers():
    # counts summing past 2**24 leave float32's exact integers: that row runs in
    # float64; a row just under runs in float32; both equal Python's integer sums
    rng = np.random.default_rng(5)
    seq = rng.integers(0, 50, 40)
    w = np.stack([rng.integers(0, 2**21, 40), np.full(40, (2**24 - 1) // 40)]).astype(float)
    assert w[0].sum() >= 2**24 > w[1].sum()
    pairs = [(i, j) for i in range(40) for j in range(i + 1, 40) if seq[i] > seq[j]]
    for row in w:
        ref = sum(int(row[i]) * int(row[j]) for i, j in pairs)
        assert int(_Inversions(seq)(row[None])[0]) == ref


@pytest.mark.parametrize("low_pairs", [0, 4, 32, 10**9])
def test_inversions_split_between_pairs_and_levels_count_the_same(low_pairs, monkeypatch):
    # the low levels listed as pairs, the rest bit by bit: any split gives the brute
    # force's count; 0 = levels only, 10**9 = pairs only
    monkeypatch.setattr(wt, "LOW_PAIRS", low_pairs)
    rng = np.random.default_rng(11)
    for m, top in ((2, 2), (40, 7), (300, 300), (1500, 10**6)):
        seq = rng.integers(0, top, m)
        w = rng.integers(0, 5, (4, m)).astype(float)
        inv = _Inversions(seq)
        assert np.array_equal(inv(w), _brute_inversions(seq, w))
        if low_pairs == 0:
            assert inv.low == 0 and inv.pairs.nnz == 0
        if low_pairs == 10**9:
            assert inv.levels == [] and inv.pairs.nnz == (_brute_inversions(seq, np.ones((1, m))))[0]


def test_inversions_keep_few_pairs_when_the_sequence_has_many_ties():
    # a two-valued sequence: every pair shares the one block above bit 0, so listing
    # pairs would cost m^2 / 2; the budget leaves that level to the cumulative sums
    rng = np.random.default_rng(12)
    seq = rng.integers(0, 2, 3000)
    inv = _Inversions(seq)
    assert inv.low == 0 and len(inv.levels) == 1
    w = rng.integers(0, 3, (3, 3000)).astype(float)
    assert np.array_equal(inv(w), _brute_inversions(seq, w))
    wide = rng.integers(0, 10**6, 3000)  # distinct values: some levels become pairs
    inv = _Inversions(wide)
    assert 0 < inv.low < 20 and inv.pairs.nnz <= wt.LOW_PAIRS * 3000
    assert np.array_equal(inv(w), _brute_inversions(wide, w))


@pytest.mark.parametrize("ties", ["none", "gold", "both"])
def test_rank_plan_scores_both_statistics_from_one_gather(ties):
    # counts drawn in the plan's order (as the bootstrap draws them) give what the
    # separate forms give on counts in pair order, Spearman against the ranks of
    # weighted_ranks, Kendall against scipy on each expanded multiset
    rng = np.random.default_rng({"none": 1, "gold": 2, "both": 3}[ties])
    m = 60
    g = rng.normal(size=m)
    p = g + rng.normal(size=m)
    if ties != "none":
        g = np.round(g)
    if ties == "both":
        p = np.round(p)
    w = rng.integers(0, 4, (8, m)).astype(float)
    plan = RankPlan(g, p)
    out = plan(w[:, plan.order])
    rg, _ = weighted_ranks(g, w)
    rp, _ = weighted_ranks(p, w)
    for b in range(len(w)):
        wb = w[b].astype(int)
        assert out["spearman"][0][b] == pytest.approx(
            np.corrcoef(np.repeat(rg[b], wb), np.repeat(rp[b], wb))[0, 1], abs=1e-12)
        assert out["spearman"][0][b] == pytest.approx(
            stats.spearmanr(np.repeat(g, wb), np.repeat(p, wb)).statistic, abs=1e-12)
        assert out["kendall"][0][b] == pytest.approx(
            stats.kendalltau(np.repeat(g, wb), np.repeat(p, wb)).statistic, abs=1e-12)
    assert out["spearman"][1].all() and out["kendall"][1].all()
    assert set(plan(w[:, plan.order], ("spearman",))) == {"spearman"}
    assert np.array_equal(plan(w[:, plan.order], ("kendall",))["kendall"][0], out["kendall"][0])
    assert np.array_equal(weighted_kendall(g, p, w)[0], out["kendall"][0])
    assert np.array_equal(weighted_spearman(g, p, w)[0], out["spearman"][0])


def test_pair_weights_drawn_in_a_plans_order_are_its_columns():
    pairs = [(f"c{a}", f"c{b}", float(a * b % 7)) for a in range(9) for b in range(a + 1, 9)]
    plan = RankPlan(np.array([s for *_, s in pairs]), np.arange(len(pairs), dtype=float) % 5)
    plain = np.concatenate(list(_pair_weights(pairs, 40, 3)))
    ordered = np.concatenate(list(_pair_weights(pairs, 40, 3, plan.order)))
    assert np.array_equal(ordered, plain[:, plan.order]) and plain.sum() > 0
