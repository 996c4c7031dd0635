"""Agreement statistics against scipy on expanded data, brute-force enumeration
of the Mantel null, and the no-NaN conventions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from culturesim_ray.report.stats import (
    _pair_weights,
    _permuted_ranks,
    bootstrap_correlations,
    bootstrap_difference,
    bootstrap_resamples,
    bootstrap_spearman,
    mantel_p,
    ndcg_at_k,
    rank_correlations,
    score_matrix,
    spearman,
)
from culturesim_ray.report.weighted import weighted_kendall


def _case(n: int, noise: float, seed: int = 0, keep: float = 1.0):
    """n cultures, a symmetric gold matrix and predictions = gold + noise;
    gold pairs: a random share `keep` of all pairs."""
    rng = np.random.default_rng(seed)
    names = [f"c{i:02d}" for i in range(n)]
    x = rng.normal(size=(n, 3))
    gold = -np.linalg.norm(x[:, None] - x[None], axis=-1)  # (n, n)
    e = rng.normal(size=(n, n))
    pred = gold + noise * (e + e.T) / 2
    pairs = [(names[i], names[j], float(gold[i, j]))
             for i, j in itertools.combinations(range(n), 2) if rng.random() < keep]
    return pairs, (names, pred)


def _pred(pairs, m):
    names, mat = m
    pos = {c: i for i, c in enumerate(names)}
    return np.array([mat[pos[a], pos[b]] for a, b, _ in pairs])


def test_constant_side_is_zero_not_nan():
    assert rank_correlations([1, 1, 1], [1, 2, 3]) == (0.0, 0.0)
    assert rank_correlations([1, 2, 3], [5, 5, 5]) == (0.0, 0.0)
    assert rank_correlations([1.0], [2.0]) == (0.0, 0.0)


def test_spearman_alone_is_rank_correlations_first_value_without_kendalls_plan(monkeypatch):
    import culturesim_ray.report.weighted as wt

    pairs, m = _case(9, noise=0.7, seed=3)
    g, p = [s for *_, s in pairs], _pred(pairs, m)
    both = rank_correlations(g, p)
    built, inversions = [], wt._Inversions
    monkeypatch.setattr(wt, "_Inversions", lambda seq: built.append(seq) or inversions(seq))
    assert rank_correlations(g, p) == both and len(built) == 1  # Kendall builds one
    built.clear()
    assert spearman(g, p) == both[0] and built == []
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_bootstrap_interval_contains_a_clear_signal_and_is_wide_on_noise():
    pairs, m = _case(15, noise=0.05)
    rho, _ = rank_correlations([s for *_, s in pairs], _pred(pairs, m))
    ci = bootstrap_correlations(pairs, _pred(pairs, m), n_boot=500, seed=0)
    assert ci["spearman_lo"] <= rho <= ci["spearman_hi"] and rho > 0.9
    assert ci["spearman_hi"] - ci["spearman_lo"] < 0.15
    assert ci["kendall_lo"] < ci["kendall_hi"]
    rng = np.random.default_rng(3)
    noise = rng.normal(size=len(pairs))
    ci = bootstrap_correlations(pairs, noise, n_boot=500, seed=0)
    assert ci["spearman_lo"] < 0 < ci["spearman_hi"]
    assert ci["spearman_hi"] - ci["spearman_lo"] > 0.2
    assert bootstrap_correlations(pairs, noise, 500, seed=0) == ci  # seeded


def test_paired_difference_matches_scipy_on_each_expanded_resample():
    # float64 reference: each resample's multiset expanded and scored by scipy
    pairs, m = _case(9, noise=0.6, seed=6)
    g = np.array([s for *_, s in pairs])
    p = _pred(pairs, m)
    r = p + np.random.default_rng(7).normal(scale=0.8, size=len(p))
    d = bootstrap_difference(pairs, p, r, n_boot=60, seed=2)
    assert d["delta"] == pytest.approx(stats.spearmanr(g, p).statistic
                                       - stats.spearmanr(g, r).statistic)
    w = np.concatenate(list(_pair_weights(pairs, 60, 2))).astype(int)
    diffs = [stats.spearmanr(np.repeat(g, wb), np.repeat(p, wb)).statistic
             - stats.spearmanr(np.repeat(g, wb), np.repeat(r, wb)).statistic for wb in w]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert (d["delta_lo"], d["delta_hi"]) == pytest.approx((lo, hi))
    assert d["delta_lo"] <= d["delta"] <= d["delta_hi"]
    assert bootstrap_difference(pairs, p, r, n_boot=60, seed=2) == d  # seeded


def test_paired_difference_is_narrower_than_the_two_intervals():
    # a prediction a little better than a noisy reference: the two single intervals
    # overlap widely, the paired one still excludes 0
    pairs, m = _case(14, noise=1.2, seed=8)
    g = np.array([s for *_, s in pairs])
    r = _pred(pairs, m)
    p = r + 0.3 * (g - r)  # moved a little towards the gold
    ci_p, ci_r = (bootstrap_correlations(pairs, v, 500, seed=0) for v in (p, r))
    d = bootstrap_difference(pairs, p, r, 500, seed=0)
    assert ci_p["spearman_lo"] < ci_r["spearman_hi"]  # single intervals overlap
    assert 0 < d["delta_lo"] < d["delta"] < d["delta_hi"]
    side_by_side = (ci_p["spearman_hi"] - ci_r["spearman_lo"]) - (ci_p["spearman_lo"]
                                                                 - ci_r["spearman_hi"])
    assert d["delta_hi"] - d["delta_lo"] < side_by_side / 2
    same = bootstrap_difference(pairs, r, r, 200, seed=0)
    assert same == {"delta": 0.0, "delta_lo": 0.0, "delta_hi": 0.0}
    with pytest.raises(ValueError, match="3 and"):
        bootstrap_difference(pairs, p[:3], r)


def test_kendall_on_every_pair_of_100_cultures_equals_scipy():
    # 4,950 gold pairs, resampled: the O(m log m) form against scipy's tau-b on
    # each expanded multiset, with ties on the gold side
    pairs, m = _case(100, noise=1.0)
    g = np.round([s for *_, s in pairs], 1)
    p = _pred(pairs, m)
    w = next(_pair_weights(pairs, 4, 5))
    tau, ok = weighted_kendall(g, p, w)
    assert ok.all()
    for b, wb in enumerate(w.astype(int)):
        ref = stats.kendalltau(np.repeat(g, wb), np.repeat(p, wb)).statistic
        assert tau[b] == pytest.approx(ref, abs=1e-12)


def test_bootstrap_and_mantel_do_not_depend_on_the_chunk_size(monkeypatch):
    import culturesim_ray.report.stats as st

    pairs, m = _case(12, noise=0.8)
    p = _pred(pairs, m)
    r = p + np.random.default_rng(4).normal(size=len(p))
    whole = (bootstrap_correlations(pairs, p, 50, seed=1),
             bootstrap_difference(pairs, p, r, 50, seed=1), mantel_p(pairs, m, 99, seed=1))
    monkeypatch.setattr(st, "CHUNK_CELLS", 3 * len(pairs))  # three resamples a chunk
    chunks = list(_pair_weights(pairs, 50, 1))
    assert [len(c) for c in chunks] == [3] * 16 + [2]
    assert (bootstrap_correlations(pairs, p, 50, seed=1),
            bootstrap_difference(pairs, p, r, 50, seed=1), mantel_p(pairs, m, 99, seed=1)) == whole


def test_bootstrap_difference_with_the_reference_resampled_once():
    # evaluate resamples the reference once a theme and passes it to every row
    pairs, m = _case(12, noise=0.8)
    p = _pred(pairs, m)
    r = p + np.random.default_rng(4).normal(size=len(p))
    once = bootstrap_spearman(pairs, r, 50, seed=1)
    assert len(once[0]) == 50 and once[1].all()
    assert (bootstrap_difference(pairs, p, r, 50, seed=1, ref_resampled=once)
            == bootstrap_difference(pairs, p, r, 50, seed=1))


def test_a_rows_own_resamples_give_its_interval_and_its_difference():
    # evaluate resamples a row's Spearman once, for its interval and its difference
    pairs, m = _case(12, noise=0.8)
    p = _pred(pairs, m)
    r = p + np.random.default_rng(4).normal(size=len(p))
    both, ref = bootstrap_resamples(pairs, p, 50, seed=1), bootstrap_resamples(pairs, r, 50, seed=1)
    own = both["spearman"]
    assert len(set(own[0].round(12))) > 10  # resamples differ
    spearman_only = bootstrap_spearman(pairs, p, 50, seed=1)
    assert np.allclose(spearman_only[0], own[0], rtol=0, atol=1e-12)
    assert (spearman_only[1] == own[1]).all()
    assert (bootstrap_correlations(pairs, p, 50, seed=1, resampled=both)
            == bootstrap_correlations(pairs, p, 50, seed=1))
    assert (bootstrap_difference(pairs, p, r, 50, seed=1, ref_resampled=ref["spearman"],
                                 pred_resampled=own)
            == bootstrap_difference(pairs, p, r, 50, seed=1))
    # the resamples are used, not recomputed: another prediction's change the interval
    assert (bootstrap_correlations(pairs, p, 50, seed=1, resampled=ref)
            != bootstrap_correlations(pairs, p, 50, seed=1))
    # resamples of another n_boot are refused, not silently mixed in; so are
    # Spearman-only ones where Kendall's interval needs its own
    for call in (lambda: bootstrap_correlations(pairs, p, 60, seed=1, resampled=both),
                 lambda: bootstrap_difference(pairs, p, r, 60, seed=1, pred_resampled=own),
                 lambda: bootstrap_difference(pairs, p, r, 60, seed=1,
                                              ref_resampled=ref["spearman"])):
        with pytest.raises(ValueError, match="50 resampled values for n_boot=60"):
            call()
    with pytest.raises(ValueError, match="no 'kendall' values"):
        bootstrap_correlations(pairs, p, 50, seed=1, resampled={"spearman": own})


def test_an_interval_no_resample_defines_is_the_estimate():
    pairs, m = _case(6, noise=0.5, seed=2)
    p = _pred(pairs, m)
    rho, tau = rank_correlations([s for *_, s in pairs], p)
    assert rho != 0 and tau != 0
    none = (np.full(7, 0.5), np.zeros(7, dtype=bool))  # values, none of them defined
    ci = bootstrap_correlations(pairs, p, 7, resampled={"spearman": none, "kendall": none})
    assert ci == {"spearman_lo": rho, "spearman_hi": rho, "kendall_lo": tau, "kendall_hi": tau}


@pytest.mark.parametrize("keep", [1.0, 0.6])
def test_mantel_small_for_signal_large_for_noise(keep):
    pairs, m = _case(15, noise=0.1, keep=keep)
    assert mantel_p(pairs, m, 999, seed=0) < 0.05
    rng = np.random.default_rng(5)
    r = rng.normal(size=(15, 15))
    assert mantel_p(pairs, (m[0], r + r.T), 999, seed=0) > 0.1


@pytest.mark.parametrize("full", [False, True])
def test_mantel_matches_enumeration_of_all_permutations(full):
    # 5 cultures, every pair or 6 of the 10 in gold; the permuted score of (a, b) is
    # pred[perm(a), perm(b)], also where that pair has no gold score; predictions
    # rounded so that some tie
    pairs, (names, pred) = _case(5, noise=0.8, seed=2, keep=1.0)
    pred = np.round(pred, 1)
    pairs = pairs if full else pairs[:6]
    g = [s for *_, s in pairs]
    pos = {c: i for i, c in enumerate(names)}
    obs = stats.spearmanr(g, _pred(pairs, (names, pred))).statistic
    ge = []
    for perm in itertools.permutations(range(5)):
        p = [pred[perm[pos[a]], perm[pos[b]]] for a, b, _ in pairs]
        ge.append(stats.spearmanr(g, p).statistic >= obs - 1e-12)
    exact = np.mean(ge)
    p = mantel_p(pairs, (names, pred), n_perm=20000, seed=0)
    assert p == pytest.approx(exact, abs=0.015)


@pytest.mark.parametrize("case", ["every pair", "asymmetric", "some pairs", "a pair twice"])
def test_permuted_ranks_equal_ranking_each_relabelling(case, monkeypatch):
    # the ranks gathered from the observed scores' (every pair once, symmetric
    # prediction) equal scipy's ranks of each relabelled score vector, ties included;
    # any other case ranks each relabelling itself
    import culturesim_ray.report.stats as st

    rng = np.random.default_rng(3)
    n = 9
    sub = np.round(rng.normal(size=(n, n)), 1)
    sub = sub + sub.T
    ia, ib = (np.array(x) for x in zip(*itertools.combinations(range(n), 2), strict=True))
    if case == "asymmetric":
        sub[0, 1] += 1e-15
    elif case == "some pairs":
        ia, ib = ia[:20], ib[:20]
    elif case == "a pair twice":
        ia, ib = np.r_[ia[:-1], ia[0]], np.r_[ib[:-1], ib[0]]
    calls = []
    monkeypatch.setattr(st, "rankdata", lambda *a, **k: calls.append(1) or stats.rankdata(*a, **k))
    ranks = _permuted_ranks(sub, ia, ib)
    q = rng.permuted(np.tile(np.arange(n), (40, 1)), axis=1)
    for part in (q[:25], q[25:]):
        assert np.array_equal(ranks(part), stats.rankdata(sub[part[:, ia], part[:, ib]], axis=1))
    assert len(calls) == (1 if case == "every pair" else 2)


def test_ndcg_conventions():
    pairs = [("A", "B", 0.5), ("A", "C", 0.5), ("B", "C", 0.5)]
    pred = {("A", "B"): 0.1, ("A", "C"): 0.9, ("B", "C"): 0.3}
    assert ndcg_at_k(pairs, pred, 2) == 1.0  # constant gold
    # D's partners all have gain 0 after min-max (idcg 0) -> 1.0 for D
    pairs = [("A", "B", 1.0), ("A", "D", 0.0), ("B", "D", 0.0), ("A", "C", 0.5)]
    pred = {("A", "B"): 0.1, ("A", "D"): 0.9, ("B", "D"): 0.3, ("A", "C"): 0.2}
    vals = ndcg_at_k(pairs, pred, 1)
    # A: top pred D (gain 0) / ideal B (1) -> 0; B: top pred D (0) vs A (1) -> 0; C: 1; D: 1
    assert vals == pytest.approx(0.5)


def _finite(row):
    return all(math.isfinite(v) for v in row.values() if isinstance(v, float | int))


def test_score_matrix_fields_and_no_nan_in_degenerate_cases():
    pairs, m = _case(8, noise=0.3, seed=4)
    r = score_matrix(pairs, m, 3, n_boot=200, n_perm=199)
    assert set(r) == {"spearman", "spearman_lo", "spearman_hi", "kendall", "kendall_lo",
                      "kendall_hi", "mantel_p", "recall@3", "ndcg@3", "pairs", "degenerate"}
    assert r["pairs"] == 28 and r["degenerate"] is False and _finite(r)
    assert 1 / 200 <= r["mantel_p"] <= 1
    const_pred = (m[0], np.full((8, 8), 0.3))
    const_gold = [(a, b, 0.7) for a, b, _ in pairs]
    for pp, pr in ((pairs, const_pred), (const_gold, m)):
        r = score_matrix(pp, pr, 3, n_boot=100, n_perm=99)
        assert r["degenerate"] is True and _finite(r)
        assert r["spearman"] == r["kendall"] == 0.0 == r["spearman_lo"] == r["spearman_hi"]
        assert r["mantel_p"] == 1.0
        assert 0 <= r["recall@3"] <= 1 and 0 <= r["ndcg@3"] <= 1


def test_score_matrix_distance_gold_and_dict_predictions():
    pairs, m = _case(8, noise=0.3, seed=6)
    ref = score_matrix(pairs, m, 2, n_boot=200, n_perm=199, seed=1)
    dist = [(a, b, -s) for a, b, s in pairs]
    assert score_matrix(dist, m, 2, n_boot=200, n_perm=199, seed=1,
                        gold_kind="distance") == ref
    flipped = score_matrix(dist, m, 2, n_boot=200, n_perm=199, seed=1)  # read as similarity
    assert flipped["spearman"] == pytest.approx(-ref["spearman"])
    names, mat = m
    d = {(a, b): mat[i, j] for i, a in enumerate(names) for j, b in enumerate(names) if i < j}
    assert score_matrix(pairs, d, 2, n_boot=200, n_perm=199, seed=1) == ref
    with pytest.raises(ValueError, match="every pair of the gold cultures"):
        score_matrix(pairs, {k: v for k, v in list(d.items())[1:]}, 2)
    with pytest.raises(ValueError, match="gold kind"):
        score_matrix(pairs, m, 2, gold_kind="dissimilarity")
