"""Evaluation metrics against scipy / sklearn on hand-made data, gold validation,
and the shipped demo gold set re-derived from its source package."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from culturesim_ray.report.evaluate import (
    GoldError,
    Method,
    evaluate,
    ndcg_at_k,
    rank_correlations,
    recall_at_k,
    validate_gold,
)
from culturesim_ray.report.gold import (
    build_demo_gold,
    demo_gold_path,
    derive_gold,
    haversine_km,
)

# hand-made: 4 cultures, 6 pairs, gold and predicted scores
PAIRS = [("A", "B", 0.9), ("A", "C", 0.5), ("A", "D", 0.1),
         ("B", "C", 0.4), ("B", "D", 0.2), ("C", "D", 0.7)]
PRED = {("A", "B"): 0.8, ("A", "C"): 0.2, ("A", "D"): 0.3,
        ("B", "C"): 0.6, ("B", "D"): 0.1, ("C", "D"): 0.5}


def test_rank_correlations_equal_scipy():
    g = [s for *_, s in PAIRS]
    p = [PRED[(a, b)] for a, b, _ in PAIRS]
    rho, tau = rank_correlations(g, p)
    assert rho == pytest.approx(stats.spearmanr(g, p).statistic)
    assert tau == pytest.approx(stats.kendalltau(g, p).statistic)
    # by hand: ranks of g 6,4,1,3,2,5 and of p 6,2,3,5,1,4 -> sum d^2 = 0+4+4+4+1+1 = 14
    assert rho == pytest.approx(1 - 6 * 14 / (6 * 35))
    assert all(math.isnan(v) for v in rank_correlations([1, 1, 1], [1, 2, 3]))


def test_recall_at_k_by_hand():
    # A: gold top-1 B, pred top-1 B -> 1; B: gold A, pred A -> 1; C: gold D (0.7), pred D? C's
    # preds: A 0.2, B 0.6, D 0.5 -> B -> 0; D: gold C, pred C (0.5) -> 1  => 3/4
    assert recall_at_k(PAIRS, PRED, 1) == pytest.approx(0.75)
    assert recall_at_k(PAIRS, PRED, 3) == pytest.approx(1.0)  # every partner retrieved


def test_ndcg_equals_sklearn_per_culture():
    from sklearn.metrics import ndcg_score

    partners = {}
    for a, b, g in PAIRS:
        partners.setdefault(a, []).append((g, PRED[(a, b)]))
        partners.setdefault(b, []).append((g, PRED[(a, b)]))
    for k in (1, 2, 3):
        ref = np.mean([ndcg_score([[g for g, _ in v]], [[p for _, p in v]], k=k)
                       for v in partners.values()])
        assert ndcg_at_k(PAIRS, PRED, k) == pytest.approx(ref)
    perfect = {(a, b): g for a, b, g in PAIRS}
    assert ndcg_at_k(PAIRS, perfect, 2) == pytest.approx(1.0)


def test_validate_gold_errors_and_skips():
    rows = [{"culture_a": "A", "culture_b": "B", "score": "0.5"},
            {"culture_a": "A", "culture_b": "Z", "score": "0.3"},
            {"culture_a": "C", "culture_b": "A", "score": 0.2, "theme": "arts"}]
    gold = validate_gold(rows, ["A", "B", "C"])
    assert gold.pairs == [("A", "B", 0.5, "general"), ("A", "C", 0.2, "arts")]
    assert gold.skipped == {"unknown culture 'Z'": 1}
    with pytest.raises(GoldError, match=r"row 2: unknown culture"):
        validate_gold(rows, ["A", "B", "C"], strict=True)
    with pytest.raises(GoldError, match=r"row 2: field 'score' is not a number: 'high'"):
        validate_gold([rows[0], {**rows[0], "culture_a": "C", "score": "high"}], ["A", "B", "C"])
    with pytest.raises(GoldError, match=r"row 2: duplicate pair \(A, B, theme general\) "
                                        r"\(first at row 1\)"):
        validate_gold([rows[0], {"culture_a": "B", "culture_b": "A", "score": 1}], ["A", "B"])
    with pytest.raises(GoldError, match="row 1: field 'culture_b' is missing"):
        validate_gold([{"culture_a": "A", "score": 1}], ["A"])
    with pytest.raises(GoldError, match="row 1: culture_a and culture_b are both 'A'"):
        validate_gold([{"culture_a": "A", "culture_b": "A", "score": 1}], ["A"])
    with pytest.raises(GoldError, match="not finite"):
        validate_gold([{"culture_a": "A", "culture_b": "B", "score": "nan"}], ["A", "B"])
    with pytest.raises(GoldError, match="no usable gold pairs"):
        validate_gold([rows[1]], ["A", "B"])


def test_evaluate_ranks_a_method_that_knows_the_answer_first():
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(8)]
    pos = rng.normal(size=(8, 2))  # the "truth": closeness on a plane
    gold_rows = [{"culture_a": a, "culture_b": b,
                  "score": float(np.exp(-np.linalg.norm(pos[i] - pos[j])))}
                 for i, a in enumerate(names) for j, b in enumerate(names) if i < j]
    gold = validate_gold(gold_rows, names)
    informed = np.hstack([pos, 0.01 * rng.normal(size=(8, 6))])
    noise = rng.normal(size=(8, 8))
    rows = evaluate(gold, [Method("informed", "similarity", {"general": (names, informed)},
                                  "euclidean"),
                           Method("noise", "baseline", {"general": (names, noise)}, "euclidean")],
                    k=2)
    by = {r["method"]: r for r in rows}
    assert by["informed"]["spearman"] > 0.95 and by["informed"]["ndcg@2"] > 0.95
    assert by["noise"]["spearman"] < by["informed"]["spearman"]
    assert by["informed"]["pairs"] == 28


def test_haversine_known_distance():
    # Paris - London ~ 344 km
    assert haversine_km((48.8566, 2.3522), (51.5074, -0.1278)) == pytest.approx(344, abs=3)


def test_demo_gold_is_rederived_exactly_from_countryinfo(tmp_path):
    rebuilt = build_demo_gold(tmp_path / "gold.csv").read_text()
    assert rebuilt == demo_gold_path().read_text()
    rows = {(r["culture_a"], r["culture_b"]): r for r in derive_gold()}
    assert len(rows) == 66
    assert rows[("French", "German")]["shared_border"] == 1
    assert rows[("French", "German")]["same_subregion"] == 1
    assert rows[("Japanese", "Spanish")]["score"] < 0.01
    assert all(0 <= r["score"] <= 1 for r in rows.values())
