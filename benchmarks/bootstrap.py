"""What `culturesim evaluate`'s agreement statistics cost as the gold grows.

Gold: every pair of G cultures (m = G (G - 1) / 2 pairs; a geometric gold and a
noisy prediction of it), 1,000 bootstrap resamples of the cultures and 999
Mantel permutations (evaluate's defaults).

1. Kendall's tau-b over the resamples: `report.weighted.RankPlan`
   (O(m log m) per resample, resamples in chunks) against the quadratic form it
   replaced, kept here as the baseline: an (m, m) sign matrix, then one matrix
   product per chunk of resamples. Same resamples on both sides; max |diff|
   checks that they agree. G = 30, 60, 120 (--quick: 30, 60).
2. A gold's whole statistics row, as evaluate computes it per method: the point
   Spearman and Kendall, their bootstrap intervals and the Mantel p-value, with
   the peak of memory allocated meanwhile (tracemalloc; numpy's buffers are
   traced). G = 60, 250, 500 (--quick: 60, 250); the growth columns divide by the
   smallest G's.

    python benchmarks/bootstrap.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import print_table, save_json  # noqa: E402
from culturesim_ray.report.stats import (  # noqa: E402
    _pair_weights,
    bootstrap_correlations,
    mantel_p,
    pair_scores,
    rank_correlations,
)
from culturesim_ray.report.weighted import (  # noqa: E402
    RankPlan,
    defined,
    weighted_ranks,
)

KENDALL_SIZES, KENDALL_QUICK = (30, 60, 120), (30, 60)
ROW_SIZES, ROW_QUICK = (60, 250, 500), (60, 250)
RESAMPLES, PERMUTATIONS = 1000, 999


def gold_case(n: int, seed: int = 0) -> tuple[list[tuple[str, str, float]], np.ndarray]:
    """Every pair of n cultures: gold = -distance of random 3-d points, prediction =
    gold plus symmetric noise; the (n, n) prediction matrix beside the pairs' scores."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    gold = -np.linalg.norm(x[:, None] - x[None], axis=-1)  # (n, n)
    e = rng.normal(size=(n, n))
    pred = gold + (e + e.T) / 2
    ij = list(itertools.combinations(range(n), 2))
    pairs = [(f"c{i:03d}", f"c{j:03d}", float(gold[i, j])) for i, j in ij]
    return pairs, pred


def names_of(pred: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The (cultures, matrix) form report.stats takes, with gold_case's names."""
    return [f"c{i:03d}" for i in range(len(pred))], pred


def quadratic_kendall(g: np.ndarray, p: np.ndarray, w: np.ndarray,
                      chunk: int = 256) -> np.ndarray:
    """The baseline: tau-b per row of counts w (B, m) from the (m, m) sign matrix,
    S = sum_{i<j} w_i w_j sign(dg) sign(dp); O(m^2) memory and O(B m^2) time."""
    sign = np.sign(g[:, None] - g[None, :]) * np.sign(p[:, None] - p[None, :])  # (m, m)
    _, tg = weighted_ranks(g, w)
    _, tp = weighted_ranks(p, w)
    s = np.concatenate([((w[i:i + chunk] @ sign) * w[i:i + chunk]).sum(1) / 2
                        for i in range(0, len(w), chunk)])
    n = w.sum(1)
    n0 = n * (n - 1) / 2
    n1, n2 = (tg * (tg - 1) / 2).sum(1), (tp * (tp - 1) / 2).sum(1)
    ok = defined(tg, tp)
    return np.where(ok, s / np.sqrt(np.where(ok, (n0 - n1) * (n0 - n2), 1.0)), 0.0)


def traced(fn) -> tuple[float, float, object]:
    """(seconds, peak MB allocated, result) of fn()."""
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return wall, peak, out


def kendall_row(n: int) -> dict:
    pairs, pred = gold_case(n)
    g, p = np.array([s for *_, s in pairs]), pair_scores(pairs, names_of(pred))
    ws = list(_pair_weights(pairs, RESAMPLES, seed=0))
    def plan_kendall() -> np.ndarray:  # one plan, as evaluate; Kendall alone, as the baseline
        plan = RankPlan(g, p)
        return np.concatenate([plan(w[:, plan.order], ("kendall",))["kendall"][0] for w in ws])

    t_new, mb_new, new = traced(plan_kendall)
    t_old, mb_old, old = traced(lambda: np.concatenate([quadratic_kendall(g, p, w) for w in ws]))
    return {"cultures": n, "pairs": len(pairs), "quadratic_s": round(t_old, 3),
            "new_s": round(t_new, 3), "quadratic_over_new": round(t_old / t_new, 2),
            "quadratic_peak_mb": round(mb_old, 1), "new_peak_mb": round(mb_new, 1),
            "max_abs_diff": float(np.abs(new - old).max())}


def statistics_row(n: int) -> dict:
    pairs, pred = gold_case(n)
    p = pair_scores(pairs, names_of(pred))

    def row() -> dict:
        rho, tau = rank_correlations([s for *_, s in pairs], p)
        return {"spearman": rho, "kendall": tau, **bootstrap_correlations(pairs, p, RESAMPLES),
                "mantel_p": mantel_p(pairs, names_of(pred), PERMUTATIONS)}

    wall, peak, out = traced(row)
    return {"cultures": n, "pairs": len(pairs), "row_s": round(wall, 2),
            "row_peak_mb": round(peak, 1), "spearman": round(out["spearman"], 4),
            "kendall": round(out["kendall"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smaller sizes only")
    ap.add_argument("--json", help="write the rows and ratios here")
    args = ap.parse_args()
    kendall = [kendall_row(n) for n in (KENDALL_QUICK if args.quick else KENDALL_SIZES)]
    print_table(kendall, [("G", "cultures", "d"), ("pairs", "pairs", "d"),
                          ("quadratic s", "quadratic_s", ".3f"), ("new s", "new_s", ".3f"),
                          ("quadratic / new", "quadratic_over_new", ".2f"),
                          ("quadratic MB", "quadratic_peak_mb", ".1f"),
                          ("new MB", "new_peak_mb", ".1f"), ("max |diff|", "max_abs_diff", ".1e")])
    rows = [statistics_row(n) for n in (ROW_QUICK if args.quick else ROW_SIZES)]
    for r in rows:
        r["pairs_growth"] = round(r["pairs"] / rows[0]["pairs"], 1)
        r["time_growth"] = round(r["row_s"] / rows[0]["row_s"], 1)
        r["memory_growth"] = round(r["row_peak_mb"] / rows[0]["row_peak_mb"], 1)
    print_table(rows, [("G", "cultures", "d"), ("pairs", "pairs", "d"),
                       ("row s", "row_s", ".2f"), ("peak MB", "row_peak_mb", ".1f"),
                       ("pairs x", "pairs_growth", ".1f"), ("time x", "time_growth", ".1f"),
                       ("memory x", "memory_growth", ".1f"), ("Spearman", "spearman", ".4f"),
                       ("Kendall", "kendall", ".4f")])
    save_json(args.json, {"kendall": kendall, "statistics_row": rows,
                          "quadratic_over_new": [r["quadratic_over_new"] for r in kendall],
                          "memory_growth_largest": rows[-1]["memory_growth"],
                          "pairs_growth_largest": rows[-1]["pairs_growth"]})


if __name__ == "__main__":
    main()
