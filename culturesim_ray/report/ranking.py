"""Retrieval agreement of predicted culture scores with gold pairs: per culture,
how well the predicted order of its gold partners matches the gold's. Pure.

Gold pairs are (culture_a, culture_b, score), "higher = more similar"
(`report.stats.orient`); pred maps (a, b) to the predicted score of every gold pair.
- recall@k: the share of a culture's k best gold partners among its k best
  predicted ones (k capped at its number of partners; ties broken by name);
- nDCG@k: gains = gold rescaled to [0, 1] (min-max over the pairs given); a
  culture whose partners all have the same gain has nDCG 1.0 (any order is ideal),
  so the value is never NaN, whatever the sign of the gold.
Both are means over the cultures.

And for queries answered with a culture (held-out items, the sanity suite):
`paired_rate_difference`, two methods' hit rates on the same queries, with a
paired bootstrap interval over the queries.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

Pair = tuple[str, str, float]


def _partners(pairs: Sequence[Pair],
              pred: dict[tuple[str, str], float]) -> dict[str, list[tuple[str, float, float]]]:
    out: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for a, b, g in pairs:
        p = pred[(a, b)]
        out[a].append((b, g, p))
        out[b].append((a, g, p))
    return out


def recall_at_k(pairs: Sequence[Pair], pred: dict[tuple[str, str], float], k: int) -> float:
    """Mean over cultures of |gold top-k partners & predicted top-k| / k (k capped
    at the culture's number of gold partners; ties broken by name)."""
    vals = []
    for items in _partners(pairs, pred).values():
        kk = min(k, len(items))
        rel = {c for c, _, _ in sorted(items, key=lambda t: (-t[1], t[0]))[:kk]}
        got = {c for c, _, _ in sorted(items, key=lambda t: (-t[2], t[0]))[:kk]}
        vals.append(len(rel & got) / kk)
    return float(np.mean(vals)) if vals else 0.0


def ndcg_at_k(pairs: Sequence[Pair], pred: dict[tuple[str, str], float], k: int) -> float:
    """Mean over cultures of DCG@k / ideal DCG@k, gain = gold min-max rescaled to
    [0, 1] over `pairs`, DCG = sum_i gain_i / log2(i + 2); 1.0 for a culture whose
    partners all have the same gain (and for all cultures when the gold is constant)."""
    lo = min((g for *_, g in pairs), default=0.0)
    span = max((g for *_, g in pairs), default=0.0) - lo
    if span == 0:
        return 1.0
    vals = []
    for items in _partners([(a, b, (g - lo) / span) for a, b, g in pairs], pred).values():
        gains = [g for _, g, _ in sorted(items, key=lambda t: (-t[2], t[0]))][:k]
        ideal = sorted((g for _, g, _ in items), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        if len({g for _, g, _ in items}) == 1 or idcg == 0:
            vals.append(1.0)
        else:
            vals.append(sum(g / math.log2(i + 2) for i, g in enumerate(gains)) / idcg)
    return float(np.mean(vals))


def paired_rate_difference(hits: Sequence[bool], ref_hits: Sequence[bool], n_boot: int = 1000,
                           seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """mean(hits) - mean(ref_hits) over the same queries (two methods' per-query
    hit/miss), and its paired percentile interval: each resample draws the queries
    with replacement and scores both methods on it. Keys delta, delta_lo, delta_hi;
    [0, 0, 0] for no queries."""
    a = np.asarray(hits, dtype=np.float64)
    b = np.asarray(ref_hits, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_rate_difference: {a.shape} hits against {b.shape}")
    if not len(a):
        return {"delta": 0.0, "delta_lo": 0.0, "delta_hi": 0.0}
    counts = np.random.default_rng([seed, 1]).multinomial(
        len(a), np.full(len(a), 1 / len(a)), size=n_boot).astype(np.float64)
    stat = counts @ (a - b) / len(a)
    lo, hi = np.percentile(stat, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"delta": float((a - b).mean()), "delta_lo": float(lo), "delta_hi": float(hi)}
