"""Evaluation metrics against scipy / sklearn on hand-made data, gold validation,
leave-cultures-out CV of the learned similarity (instrumented) and of the fitted
metric (the gold of a scored culture's pairs changed: its scores do not move), the gold kinds
and precomputed matrices (the demo gold set: test_gold.py; run directories:
test_evaluate_run.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from culturesim_ray.report.evaluate import (
    GoldError,
    Method,
    culture_folds,
    evaluate,
    format_table,
    learned_cv_matrix,
    metric_cv_matrix,
    ndcg_at_k,
    plot_evaluation,
    rank_correlations,
    recall_at_k,
    validate_gold,
    vector_matrix,
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
    assert rank_correlations([1, 1, 1], [1, 2, 3]) == (0.0, 0.0)  # constant side: 0, not NaN


def test_recall_at_k_by_hand():
    # A: gold top-1 B, pred top-1 B -> 1; B: gold A, pred A -> 1; C: gold D (0.7), pred D? C's
    # preds: A 0.2, B 0.6, D 0.5 -> B -> 0; D: gold C, pred C (0.5) -> 1  => 3/4
    assert recall_at_k(PAIRS, PRED, 1) == pytest.approx(0.75)
    assert recall_at_k(PAIRS, PRED, 3) == pytest.approx(1.0)  # every partner retrieved


def test_ndcg_equals_sklearn_per_culture():
    from sklearn.metrics import ndcg_score

    lo, hi = min(g for *_, g in PAIRS), max(g for *_, g in PAIRS)
    partners = {}
    for a, b, g in [(a, b, (g - lo) / (hi - lo)) for a, b, g in PAIRS]:  # gains min-max
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
    with pytest.raises(GoldError, match=r"row 2: duplicate pair \(A, B, theme general\) with "
                                        r"score 1.0 \(first at row 1, score 0.5\)"):
        validate_gold([rows[0], {"culture_a": "A", "culture_b": "B", "score": 1}], ["A", "B"])
    # asymmetric gold (B -> A scored otherwise than A -> B): the mean, listed
    both = validate_gold([rows[0], {"culture_a": "B", "culture_b": "A", "score": 1},
                          {"culture_a": "B", "culture_b": "A", "score": "1.0"},
                          {"culture_a": "C", "culture_b": "A", "score": 0.1}], ["A", "B", "C"])
    assert both.pairs == [("A", "B", 0.75, "general"), ("A", "C", 0.1, "general")]
    assert both.asymmetric == {("A", "B", "general"): (0.5, 1.0)}
    assert both.skipped == {"the same pair again, with the same score": 1}
    assert both.asymmetric_note() == (
        "1 gold pair(s) are scored differently in their two directions (asymmetric gold; "
        "the culture map is symmetric, so each is scored by the mean of its two): "
        "(A, B) 0.5 / (B, A) 1")
    with pytest.raises(GoldError, match=r"row 3: duplicate pair \(A, B, theme general\)"):
        validate_gold([rows[0], {"culture_a": "B", "culture_b": "A", "score": 1},
                       {"culture_a": "B", "culture_b": "A", "score": 2}], ["A", "B"])
    near = [{"culture_a": "Chinesse", "culture_b": "Greek", "score": 1},
            {"culture_a": "Greek", "culture_b": "Persain", "score": 1},
            {"culture_a": "Greek", "culture_b": "Atlantis", "score": 1}]
    known = ["Chinese", "Greek", "Persian"]
    assert validate_gold([*near, {"culture_a": "Greek", "culture_b": "Persian", "score": 1}],
                         known).skipped == {
        "unknown culture 'Chinesse' (did you mean 'Chinese'?)": 1,
        "unknown culture 'Persain' (did you mean 'Persian'?)": 1,
        "unknown culture 'Atlantis'": 1}
    with pytest.raises(GoldError, match=r"row 1: .* cultures\) \(did you mean 'Chinese'\?\)"):
        validate_gold(near, known, strict=True)
    with pytest.raises(GoldError, match="row 2: field 'culture_b' is missing"):
        validate_gold([rows[0], {"culture_a": "A", "culture_b": "", "score": 1}], ["A", "B"])
    # a column no row has: the file's own columns are named (a CSV with other headers)
    with pytest.raises(GoldError, match=r"^g.csv: no culture_a, score columns \(the file has "
                                        r"a, culture_b, value; a gold file has culture_a, "
                                        r"culture_b, score and optionally theme, or is a "
                                        r"square culture x culture matrix\)$"):
        validate_gold([{"a": "A", "culture_b": "B", "value": 1, "_source_row": "g.csv:2"}],
                      ["A", "B"], source="g.csv")
    square = [{"culture_a": x, "culture_b": y, "score": 1.0 if x == y else 0.25 + ({x, y} == {"A", "C"})}
              for x in "ABC" for y in "ABC"]  # a square matrix: diagonal, both orders
    gold = validate_gold(square, ["A", "B", "C"])
    assert gold.pairs == [("A", "B", 0.25, "general"), ("A", "C", 1.25, "general"),
                          ("B", "C", 0.25, "general")]
    assert gold.skipped == {"self pair (a culture with itself)": 3,
                            "the same pair again, with the same score": 3}
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


def _planar(n: int = 10, seed: int = 0, keep: float = 1.0):
    """n cultures on a plane; gold = exp(-distance); vectors = position + small noise."""
    rng = np.random.default_rng(seed)
    names = [f"c{i:02d}" for i in range(n)]
    pos = rng.normal(size=(n, 2))
    rows = [{"culture_a": a, "culture_b": b,
             "score": float(np.exp(-np.linalg.norm(pos[i] - pos[j])))}
            for i, a in enumerate(names) for j, b in enumerate(names)
            if i < j and rng.random() < keep]
    vec = np.hstack([pos, 0.05 * rng.normal(size=(n, 4))]).astype(np.float32)
    return names, rows, vec


def _finite_row(r):
    return all(math.isfinite(v) for v in r.values() if isinstance(v, float | int))


def test_evaluate_rows_carry_intervals_mantel_and_cv_labels(tmp_path, fast_learned):
    names, rows, vec = _planar(10)
    gold = validate_gold(rows, names)
    out = evaluate(gold, [Method("m", "similarity", {"general": (names, vec)}, "euclidean"),
                          Method("m + learned", "similarity", {"general": (names, vec)},
                                 "learned")], k=2, n_boot=200, n_perm=199)
    by = {r["method"]: r for r in out}
    assert set(by) == {"m", "m + learned (leave-cultures-out CV)", "m + learned (pair-level CV)"}
    assert [by[n]["cv"] for n in sorted(by)] == ["", "cultures", "pairs"]
    e = by["m"]
    assert e["spearman_lo"] <= e["spearman"] <= e["spearman_hi"] and e["mantel_p"] < 0.05
    assert e["kendall_lo"] <= e["kendall"] <= e["kendall_hi"] and e["degenerate"] is False
    assert all(_finite_row(r) for r in out)
    table = format_table(out, 2)
    assert f"{e['spearman']:.3f} [{e['spearman_lo']:.2f}, {e['spearman_hi']:.2f}]" in table
    assert "leave-cultures-out CV" in table and "mantel p" in table
    lines = [ln for ln in table.splitlines() if ln.startswith("m")]
    assert lines[-1].startswith("m + learned (pair-level CV)")  # last, whatever its score
    assert "cv: fitted on this gold (not a read-out without it)" in table
    assert "cv pairs, listed last, is pair-level CV" in table
    assert plot_evaluation(out, tmp_path / "e.png", 2).read_bytes()[:4] == b"\x89PNG"
    assert not any("delta_spearman" in r for r in out)  # no reference asked for


def test_rows_compared_with_a_reference_carry_the_paired_difference():
    from culturesim_ray.report.stats import bootstrap_difference, pair_scores

    names, rows, vec = _planar(10, seed=2)
    gold = validate_gold(rows, names)
    noisy = vec + np.random.default_rng(3).normal(scale=0.8, size=vec.shape).astype(np.float32)
    methods = [Method("raw", "baseline", {"general": (names, noisy)}, "euclidean"),
               Method("good", "model", {"general": (names, vec)}, "euclidean")]
    out = evaluate(gold, methods, k=2, n_boot=300, n_perm=99, reference="raw")
    by = {r["method"]: r for r in out}
    assert by["raw"]["delta_spearman"] == by["raw"]["delta_lo"] == by["raw"]["delta_hi"] == 0.0
    g = by["good"]
    assert g["vs"] == "raw" and g["delta_pairs"] == g["pairs"] == 45
    assert g["delta_spearman"] == pytest.approx(by["good"]["spearman"] - by["raw"]["spearman"])
    assert 0 < g["delta_lo"] <= g["delta_spearman"] <= g["delta_hi"]
    pairs = [(a, b, s) for a, b, s, _ in gold.pairs]
    from culturesim_ray.ops import similarity as S
    from culturesim_ray.report.evaluate import vector_matrix
    d = bootstrap_difference(pairs, pair_scores(pairs, vector_matrix((names, vec),
                                                                     S.get("euclidean"))),
                             pair_scores(pairs, vector_matrix((names, noisy), S.get("euclidean"))),
                             300, 0)
    assert (g["delta_lo"], g["delta_hi"]) == pytest.approx((d["delta_lo"], d["delta_hi"]))
    table = format_table(out, 2)
    assert f"{g['delta_spearman']:+.3f} [{g['delta_lo']:+.2f}, {g['delta_hi']:+.2f}]" in table
    assert "reference: raw" in table
    with pytest.raises(ValueError, match="no method named 'absent'"):
        evaluate(gold, methods, k=2, n_boot=10, n_perm=9, reference="absent")


def test_each_row_is_resampled_in_one_pass_and_the_reference_once(monkeypatch):
    import culturesim_ray.report.stats as st

    names, rows, vec = _planar(10, seed=2)
    gold = validate_gold(rows, names)
    noisy = vec + np.random.default_rng(3).normal(scale=0.8, size=vec.shape).astype(np.float32)
    methods = [Method("raw", "baseline", {"general": (names, noisy)}, "euclidean"),
               Method("good", "model", {"general": (names, vec)}, "euclidean"),
               Method("cos", "model", {"general": (names, vec)}, "cosine")]
    resampled: dict[str, int] = {"spearman": 0, "kendall": 0}

    class Counted(st.RankPlan):
        def __call__(self, ws, stats=st.STATISTICS):
            if len(ws) > 1:  # a resample chunk, not a point estimate
                for name in stats:
                    resampled[name] += len(ws)
            return super().__call__(ws, stats)

    monkeypatch.setattr(st, "RankPlan", Counted)
    plain = evaluate(gold, methods, k=2, n_boot=40, n_perm=9)
    assert resampled == {"spearman": 40 * len(plain), "kendall": 40 * len(plain)}
    assert len(plain) == 3
    resampled.update(spearman=0, kendall=0)
    out = evaluate(gold, methods, k=2, n_boot=40, n_perm=9, reference="raw")
    # each row's own Spearman and Kendall in one pass, the reference's Spearman once
    assert resampled == {"spearman": 40 * (len(out) + 1), "kendall": 40 * len(out)}
    assert [{k: v for k, v in r.items() if not k.startswith(("vs", "delta"))} for r in out] == plain


def test_leave_cultures_out_cv_never_trains_on_a_test_culture(monkeypatch, fast_learned):
    from culturesim_ray.ops.learned import LearnedSimilarity

    names, rows, vec = _planar(11, seed=1, keep=0.7)  # gold covers only some pairs
    pairs = [(a, b, s) for a, b, s, _ in validate_gold(rows, names).pairs]
    t = torch.from_numpy(vec)
    fits: list[dict] = []
    fit, pairwise = LearnedSimilarity.fit, LearnedSimilarity.pairwise

    def culture(rows_):  # map vectors back to culture names (rows are distinct)
        return [names[int((t == r).all(1).nonzero()[0, 0])] for r in rows_]

    def rec_fit(self, a, b, labels):
        fits.append({"train": set(zip(culture(a), culture(b), strict=True)), "test": set()})
        self._rec = fits[-1]
        return fit(self, a, b, labels)

    def rec_pairwise(self, a, b):
        self._rec["test"] |= set(zip(culture(a), culture(b), strict=True))
        return pairwise(self, a, b)

    monkeypatch.setattr(LearnedSimilarity, "fit", rec_fit)
    monkeypatch.setattr(LearnedSimilarity, "pairwise", rec_pairwise)
    cultures, m = learned_cv_matrix((names, vec), pairs, "cultures", folds=4, seed=3)
    fold_of = culture_folds(cultures, 4, seed=3)
    assert len(fits) == 4 and sorted(set(fold_of.values())) == [0, 1, 2, 3]
    scored = []
    for rec in fits:
        (f,) = {fold_of[a] for a, _ in rec["test"]}  # one fold per model
        held = {c for c, g in fold_of.items() if g == f}
        assert rec["train"] and all(a not in held and b not in held for a, b in rec["train"])
        assert rec["train"] <= {(a, b) for a, b, _ in pairs}
        scored += rec["test"]
    gold_pairs = {(a, b) for a, b, _ in pairs}
    assert len(scored) == len(set(scored)) == 55  # every pair of the 11 cultures, once
    assert gold_pairs <= set(scored) and np.allclose(m, m.T)
    # a pair joining two folds is trained on by neither
    for a, b in gold_pairs:
        for rec in fits:
            if (a, b) in rec["train"]:
                assert not {fold_of[a], fold_of[b]} & {fold_of[x] for x, _ in rec["test"]}
    # pair-level CV: a gold pair is never scored by a model trained on it
    fits.clear()
    learned_cv_matrix((names, vec), pairs, "pairs", folds=4, seed=3)
    assert len(fits) == 4
    assert all(not (rec["train"] & rec["test"]) for rec in fits)


def test_metric_cv_never_reads_the_gold_of_the_pairs_it_scores():
    rng = np.random.default_rng(7)
    names = [f"c{i:02d}" for i in range(12)]
    vec = rng.normal(size=(12, 6)) + 0.2
    vec[:, 0] = np.linspace(-2, 2, 12)  # the gold follows dimension 0
    pairs = [(names[a], names[b], -abs(vec[a, 0] - vec[b, 0]) + 0.05 * rng.normal())
             for a in range(12) for b in range(a + 1, 12)]
    cultures, m = metric_cv_matrix((names, vec), pairs, "cultures", folds=4, seed=3)
    fold_of = culture_folds(cultures, 4, seed=3)
    ia, ib = np.triu_indices(12, 1)
    gold = np.array([s for *_, s in pairs])
    cos = vector_matrix((names, vec.astype(np.float32)), lambda x, y: (
        x / x.norm(dim=1, keepdim=True)) @ (y / y.norm(dim=1, keepdim=True)).T)[1]
    assert np.allclose(m, m.T)
    # it finds the dimension the gold follows, on cultures whose pairs it never fitted
    assert (stats.spearmanr(m[ia, ib], gold).statistic
            > stats.spearmanr(cos[ia, ib], gold).statistic + 0.1)
    for f in range(4):  # new gold for every pair touching fold f: fold f's scores stay
        held = {c for c, g in fold_of.items() if g == f}
        changed = [(a, b, float(rng.normal()) if a in held or b in held else s)
                   for a, b, s in pairs]
        m2 = metric_cv_matrix((names, vec), changed, "cultures", folds=4, seed=3)[1]
        mine = np.array([fold_of[names[i]] == f for i in ia])
        np.testing.assert_allclose(m2[ia, ib][mine], m[ia, ib][mine], rtol=1e-12)
        assert not np.allclose(m2[ia, ib][~mine], m[ia, ib][~mine])
    # pair-level CV: the gold of a pair does not score it
    _, mp = metric_cv_matrix((names, vec), pairs, "pairs", folds=4, seed=3)
    assert np.allclose(mp, mp.T) and np.isfinite(mp).all()


def test_distance_gold_equals_negated_similarity_gold(fast_learned):
    names, rows, vec = _planar(9, seed=2)
    methods = [Method("cos", "similarity", {"general": (names, vec)}, "cosine"),
               Method("learned", "similarity", {"general": (names, vec)}, "learned")]
    sim = evaluate(validate_gold(rows, names), methods, k=2, n_boot=100, n_perm=99)
    neg = [{**r, "score": -r["score"]} for r in rows]
    gold = validate_gold(neg, names, gold_kind="distance")
    assert gold.kind == "distance"
    assert evaluate(gold, methods, k=2, n_boot=100, n_perm=99) == sim
    wrong = evaluate(validate_gold(neg, names), methods[:1], k=2, n_boot=100, n_perm=99)
    assert wrong[0]["spearman"] == pytest.approx(-sim[0]["spearman"])
    with pytest.raises(GoldError, match="gold kind"):
        validate_gold(rows, names, gold_kind="dissimilarity")


def test_no_nan_for_constant_predictions_constant_gold_and_distance_gold():
    names, rows, vec = _planar(8, seed=4)
    const = Method("const", "baseline", matrices={"general": (names, np.full((8, 8), 0.2))})
    good = Method("cos", "similarity", {"general": (names, vec)})
    for gold in (validate_gold(rows, names),
                 validate_gold([{**r, "score": 0.5} for r in rows], names),
                 validate_gold(rows, names, gold_kind="distance")):
        out = evaluate(gold, [const, good], k=3, n_boot=100, n_perm=99)
        assert len(out) == 2 and all(_finite_row(r) for r in out)
    assert out[0]["degenerate"] is True and out[0]["spearman"] == 0.0


def test_precomputed_matrices_equal_the_vectors_path():
    from culturesim_ray.ops import similarity as S

    names, rows, vec = _planar(9, seed=5, keep=0.8)
    gold = validate_gold(rows, names)
    # the matrix in another culture order, with a culture the gold does not use
    cultures, m = vector_matrix((names, vec), S.cosine)
    order = np.random.default_rng(0).permutation(9)
    pre = Method("x", "similarity", similarity="cosine",
                 matrices={"general": ([cultures[i] for i in order], m[np.ix_(order, order)])})
    via = Method("x", "similarity", {"general": (names, vec)}, "cosine")
    a, b = (evaluate(gold, [mm], k=2, n_boot=100, n_perm=99) for mm in (pre, via))
    assert a[0] == pytest.approx(b[0])


def test_cli_gold_kind_flag():
    from culturesim_ray.cli import build_parser

    args = build_parser().parse_args(["evaluate", "run", "--gold", "g.csv",
                                      "--gold-kind", "distance"])
    assert args.gold_kind == "distance"
    assert build_parser().parse_args(["evaluate", "run", "--gold", "g"]).gold_kind is None
