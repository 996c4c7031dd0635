"""Agreement statistics between gold culture pairs and a predicted culture matrix.

Pure numpy/scipy. Gold pairs are (culture_a, culture_b, score) read as
"higher = more similar" (`orient` negates distance-type gold first), so every
statistic reads "higher = better agreement". Conventions, so that no value is
ever NaN:

- Spearman / Kendall (tau-b): 0.0 when either side is constant over the pairs
  (or there are fewer than 2 pairs); `score_matrix` flags it `degenerate`.
- Bootstrap over cultures (95% percentile interval): each resample draws the
  gold cultures with replacement; a gold pair enters with multiplicity
  count(a) * count(b) (the pairs among the drawn cultures, copies included);
  the statistic is that of the expanded multiset (ties by average rank).
  Resamples where it is undefined (a constant side) are skipped; when none is
  left the interval is [estimate, estimate].
- Mantel test: the same permutation of the gold cultures is applied to the
  rows and columns of the predicted matrix; the pair (a, b) is then scored
  pred[perm(a), perm(b)]; p = (1 + #{perm stat >= observed}) / (1 + n_perm),
  one-sided (agreement larger than chance).
- recall@k and nDCG@k: `report.ranking`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy.stats import rankdata

from culturesim_ray.report.ranking import Pair, ndcg_at_k, recall_at_k
from culturesim_ray.report.weighted import STATISTICS, RankPlan

Matrix = tuple[list[str], np.ndarray]  # cultures, (C, C) predicted similarity
GOLD_KINDS = ("similarity", "distance")
CHUNK_CELLS = 1 << 22  # resamples / permutations scored at once: about this many (row, pair) cells


def orient(pairs: Sequence[Pair], gold_kind: str = "similarity") -> list[Pair]:
    """Gold pairs as "higher = more similar": distance-type scores are negated."""
    if gold_kind not in GOLD_KINDS:
        raise ValueError(f"gold kind must be one of {GOLD_KINDS}, got {gold_kind!r}")
    sign = -1.0 if gold_kind == "distance" else 1.0
    return [(a, b, sign * float(s)) for a, b, s in pairs]


def rank_correlations(gold: Sequence[float], pred: Sequence[float]) -> tuple[float, float]:
    """(Spearman rho, Kendall tau-b); both 0.0 when either side is constant."""
    out = _point(gold, pred, STATISTICS)
    return out["spearman"], out["kendall"]


def spearman(gold: Sequence[float], pred: Sequence[float]) -> float:
    """Spearman rho alone (`rank_correlations`' first value, without Kendall's plan)."""
    return _point(gold, pred, ("spearman",))["spearman"]


def _point(gold: Sequence[float], pred: Sequence[float], stats: tuple[str, ...]
           ) -> dict[str, float]:
    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    out = RankPlan(g, p)(np.ones((1, len(g))), stats)  # one copy of each pair, in any order
    return {k: float(v[0][0]) for k, v in out.items()}


def is_degenerate(gold: Sequence[float], pred: Sequence[float]) -> bool:
    """True when a rank correlation is undefined: < 2 pairs or a constant side."""
    g, p = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return bool(len(g) < 2 or np.ptp(g) == 0 or np.ptp(p) == 0)


# ---------------------------------------------------------------- resampling
def _index(pairs: Sequence[Pair]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Gold cultures (sorted) and each pair's two culture indices."""
    names = sorted({c for a, b, _ in pairs for c in (a, b)})
    pos = {c: i for i, c in enumerate(names)}
    return (names, np.array([pos[a] for a, _, _ in pairs]),
            np.array([pos[b] for _, b, _ in pairs]))


def _chunk_rows(m: int) -> int:
    """Rows (resamples, permutations) of m gold pairs scored at once: about CHUNK_CELLS cells."""
    return max(1, CHUNK_CELLS // max(m, 1))


def _pair_weights(pairs: Sequence[Pair], n_boot: int, seed: int,
                  order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The resamples' (rows, m) multiplicities of the gold pairs: each resample draws
    the gold cultures with replacement and pair (a, b) enters count(a) * count(b)
    times; in chunks of `_chunk_rows(m)` resamples, so memory is bounded whatever
    the number of gold pairs m. order: the pairs' columns in this order (a
    `RankPlan`'s), drawn so without a gather."""
    names, ia, ib = _index(pairs)
    if order is not None:
        ia, ib = ia[order], ib[order]
    counts = np.random.default_rng([seed, 0]).multinomial(
        len(names), np.full(len(names), 1 / len(names)), size=n_boot).astype(np.float64)
    rows = _chunk_rows(len(ia))
    for i in range(0, n_boot, rows):
        c = counts[i:i + rows]
        yield c[:, ia] * c[:, ib]


Resampled = dict[str, tuple[np.ndarray, np.ndarray]]  # statistic -> (values, defined), n_boot each


def bootstrap_resamples(pairs: Sequence[Pair], pred: Sequence[float], n_boot: int = 1000,
                        seed: int = 0, stats: tuple[str, ...] = STATISTICS) -> Resampled:
    """Spearman ("spearman") and Kendall ("kendall") of pred with the gold on each
    resample of the cultures (`_pair_weights`): (values (n_boot,), defined (n_boot,))
    each, all from one pass; `stats` names the ones wanted."""
    g = np.array([s for *_, s in pairs], dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if len(g) != len(p):
        raise ValueError(f"bootstrap: {len(g)} gold pairs, {len(p)} predicted scores")
    plan = RankPlan(g, p)
    parts = [plan(w, stats) for w in _pair_weights(pairs, n_boot, seed, plan.order)]
    return {k: (np.concatenate([d[k][0] for d in parts]) if parts else np.zeros(0),
                np.concatenate([d[k][1] for d in parts]) if parts else np.zeros(0, dtype=bool))
            for k in stats}


def bootstrap_correlations(pairs: Sequence[Pair], pred: Sequence[float], n_boot: int = 1000,
                           seed: int = 0, level: float = 0.95,
                           resampled: Resampled | None = None) -> dict[str, float]:
    """Percentile intervals of Spearman and Kendall over cultures resampled with
    replacement (multiplicity count(a) * count(b)); keys spearman_lo/hi, kendall_lo/hi.
    resampled: `bootstrap_resamples` of pred on these pairs, when the caller has it
    (it also needs the Spearman ones for a paired difference)."""
    if resampled is None:
        resampled = bootstrap_resamples(pairs, pred, n_boot, seed)
    out = {}
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    for i, name in enumerate(STATISTICS):
        if name not in resampled:
            raise ValueError(f"resampled: no {name!r} values (from bootstrap_spearman?)")
        stat, ok = _resampled(resampled[name], n_boot, "resampled")
        if ok.any():
            lo, hi = np.percentile(stat[ok], q)
        else:  # no resample defines it: the point estimate
            lo = hi = rank_correlations([s for *_, s in pairs], pred)[i]
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out


def bootstrap_spearman(pairs: Sequence[Pair], pred: Sequence[float], n_boot: int = 1000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spearman of pred with the gold on each resample of the cultures (those of
    `bootstrap_correlations`, same seed): (rho (n_boot,), defined (n_boot,))."""
    return bootstrap_resamples(pairs, pred, n_boot, seed, ("spearman",))["spearman"]


def _resampled(given: tuple[np.ndarray, np.ndarray], n_boot: int,
               name: str) -> tuple[np.ndarray, np.ndarray]:
    """A caller's resampled values, checked against the n_boot they are used with."""
    rho, ok = given
    if len(rho) != n_boot or len(ok) != n_boot:
        raise ValueError(f"{name}: {len(rho)} resampled values for n_boot={n_boot} "
                         "(from another bootstrap call?)")
    return rho, ok


def bootstrap_difference(pairs: Sequence[Pair], pred: Sequence[float], ref: Sequence[float],
                         n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                         ref_resampled: tuple[np.ndarray, np.ndarray] | None = None,
                         pred_resampled: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> dict[str, float]:
    """Spearman(pred) - Spearman(ref) on the same gold pairs, and its paired
    percentile interval: each resample of the cultures (the resamples of
    `bootstrap_correlations`, same seed) scores both predictions, so the interval
    is that of the difference, not two intervals side by side. Keys delta,
    delta_lo, delta_hi; resamples where either correlation is undefined are
    skipped ([delta, delta] when none is left). ref_resampled / pred_resampled:
    `bootstrap_spearman` of ref / pred on these pairs, when the caller has it (one
    reference, many rows; a row's own resamples also give its interval)."""
    g = np.array([s for *_, s in pairs], dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if not len(g) == len(p) == len(r):
        raise ValueError(f"bootstrap_difference: {len(g)} gold pairs, {len(p)} and {len(r)} "
                         "predicted scores")
    delta = spearman(g, p) - spearman(g, r)
    sp, okp = (_resampled(pred_resampled, n_boot, "pred_resampled")
               if pred_resampled is not None else bootstrap_spearman(pairs, p, n_boot, seed))
    sr, okr = (_resampled(ref_resampled, n_boot, "ref_resampled")
               if ref_resampled is not None else bootstrap_spearman(pairs, r, n_boot, seed))
    d = (sp - sr)[okp & okr]
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    lo, hi = np.percentile(d, q) if len(d) else (delta, delta)
    return {"delta": float(delta), "delta_lo": float(lo), "delta_hi": float(hi)}


def _rowwise_spearman(rg: np.ndarray, rp: np.ndarray) -> np.ndarray:
    """Spearman of fixed ranks rg (m,) with each row of ranks rp (R, m); 0.0 for a
    constant row."""
    dg = rg - rg.mean()
    dp = rp - rp.mean(1, keepdims=True)
    den = np.sqrt((dg * dg).sum() * (dp * dp).sum(1))
    return np.where(den > 0, (dp @ dg) / np.where(den > 0, den, 1.0), 0.0)


def _permuted_ranks(sub: np.ndarray, ia: np.ndarray,
                    ib: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """q (R, n) relabellings of the cultures -> (R, m) ranks of sub[q[ia], q[ib]].

    When the pairs are every pair of the n cultures once and sub is symmetric, a
    relabelling only reorders the same m scores, so their ranks are gathered from
    the ranks of the observed ones; otherwise each row is ranked anew."""
    n = len(sub)
    key = np.unique(np.minimum(ia, ib) * n + np.maximum(ia, ib))
    if (len(key) == len(ia) == n * (n - 1) // 2 and not (ia == ib).any()
            and np.array_equal(sub, sub.T)):
        ranks = np.zeros_like(sub)
        ranks[ia, ib] = rankdata(sub[ia, ib])
        ranks[ib, ia] = ranks[ia, ib]
        return lambda q: ranks[q[:, ia], q[:, ib]]
    return lambda q: rankdata(sub[q[:, ia], q[:, ib]], axis=1)


def mantel_p(pairs: Sequence[Pair], pred: Matrix, n_perm: int = 999, seed: int = 0) -> float:
    """Mantel permutation p-value of the Spearman between gold and predicted scores.

    pred must score every pair of the gold cultures (gold may cover only some)."""
    names, ia, ib = _index(pairs)
    cultures, m = pred
    pos = {c: i for i, c in enumerate(cultures)}
    sub = np.asarray(m, dtype=np.float64)[np.ix_([pos[c] for c in names], [pos[c] for c in names])]
    g = np.array([s for *_, s in pairs], dtype=np.float64)
    if np.ptp(g) == 0:
        return 1.0
    rg = rankdata(g)
    ranks = _permuted_ranks(sub, ia, ib)
    obs = _rowwise_spearman(rg, ranks(np.arange(len(names))[None]))[0]
    rng = np.random.default_rng([seed, 1])
    perms = rng.permuted(np.tile(np.arange(len(names)), (n_perm, 1)), axis=1)  # (n_perm, n)
    rows = _chunk_rows(len(ia))
    above = sum(int(np.sum(_rowwise_spearman(rg, ranks(q)) >= obs - 1e-12))
                for q in (perms[i:i + rows] for i in range(0, n_perm, rows)))
    return float((1 + above) / (1 + n_perm))


# ---------------------------------------------------------------- one method
def as_matrix(pred: Matrix | dict[tuple[str, str], float], cultures: Sequence[str]) -> Matrix:
    """A predicted matrix over `cultures`, from a matrix or from a pair dict that
    scores every pair (either order); a missing pair is a ValueError."""
    if isinstance(pred, tuple):
        return pred
    n = len(cultures)
    m = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a, b = cultures[i], cultures[j]
            s = pred.get((a, b), pred.get((b, a)))
            if s is None:
                raise ValueError(f"no predicted score for ({a}, {b}): the Mantel test needs "
                                 "every pair of the gold cultures")
            m[i, j] = m[j, i] = s
    return list(cultures), m


def pair_scores(pairs: Sequence[Pair], pred: Matrix | dict[tuple[str, str], float]
                ) -> np.ndarray:
    """(m,) float64 predicted score of each gold pair; a culture the prediction does
    not cover or a non-finite score is a ValueError."""
    cultures, m = as_matrix(pred, _index(pairs)[0])
    pos = {c: i for i, c in enumerate(cultures)}
    missing = sorted({c for a, b, _ in pairs for c in (a, b)} - set(pos))
    if missing:
        raise ValueError(f"pair_scores: no predicted scores for culture(s) {missing[:5]}")
    p = np.array([m[pos[a], pos[b]] for a, b, _ in pairs], dtype=np.float64)
    if not np.isfinite(p).all():
        raise ValueError(f"pair_scores: {int((~np.isfinite(p)).sum())} non-finite predicted "
                         "score(s) on gold pairs")
    return p


def score_matrix(pairs: Sequence[Pair], pred: Matrix | dict[tuple[str, str], float], k: int,
                 n_boot: int = 1000, n_perm: int = 999, seed: int = 0,
                 gold_kind: str = "similarity", resampled: Resampled | None = None
                 ) -> dict[str, float | int | bool]:
    """Every statistic of one method on gold `pairs` (a, b, score): spearman, kendall
    (+ _lo/_hi bootstrap intervals), mantel_p, recall@k, ndcg@k, pairs, degenerate.

    pred: (cultures, (C, C) matrix) covering the gold cultures, or a dict
    (a, b) -> score over every pair of them. gold_kind "distance" negates the gold.
    resampled: as in `bootstrap_correlations` (pairs as oriented here)."""
    if not pairs:
        raise ValueError("score_matrix: no gold pairs")
    pairs = orient(pairs, gold_kind)
    cultures, m = as_matrix(pred, _index(pairs)[0])
    p = pair_scores(pairs, (cultures, m))
    g = [s for *_, s in pairs]
    rho, tau = rank_correlations(g, p)
    d = {(a, b): float(v) for (a, b, _), v in zip(pairs, p, strict=True)}
    ci = bootstrap_correlations(pairs, p, n_boot, seed, resampled=resampled)
    return {"spearman": rho, "spearman_lo": ci["spearman_lo"], "spearman_hi": ci["spearman_hi"],
            "kendall": tau, "kendall_lo": ci["kendall_lo"], "kendall_hi": ci["kendall_hi"],
            "mantel_p": mantel_p(pairs, (cultures, m), n_perm, seed),
            f"recall@{k}": recall_at_k(pairs, d, k), f"ndcg@{k}": ndcg_at_k(pairs, d, k),
            "pairs": len(pairs), "degenerate": bool(is_degenerate(g, p))}
