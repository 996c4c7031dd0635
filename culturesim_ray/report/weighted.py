"""Rank correlations on weighted multisets (pure numpy): item i of the pairs counted
w[b, i] times in row b of a (B, m) array of counts, the form the culture bootstrap
of `report.stats` draws. Ties by average rank; Spearman and Kendall tau-b are 0.0
on a row where either side is constant (`defined` False there).

The sorts and tie groups depend on the values only, so `Kendall` builds them once
for (gold, pred) and scores every chunk of resamples with them.
"""

from __future__ import annotations

import numpy as np


def _tie_groups(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, group start positions in sorted order, group id per sorted position)."""
    order = np.argsort(v, kind="stable")
    vs = v[order]
    new = np.r_[True, vs[1:] != vs[:-1]] if len(v) else np.zeros(0, dtype=bool)
    return order, np.flatnonzero(new), np.cumsum(new) - 1


def _segment_sums(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(B, len(starts)) sums of the runs of columns of x (B, m) that begin at `starts`
    (increasing, from 0). x holds counts, so the sums are exact; with one column a run,
    x itself (not a copy)."""
    if len(starts) == x.shape[1]:
        return x
    return np.add.reduceat(x, starts, axis=1)


def weighted_ranks(v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks of v (m,) in the multiset where item i appears w[b, i] times.

    w: (B, m) non-negative counts. Returns (ranks (B, m), tie-group totals (B, G))."""
    order, starts, gid = _tie_groups(v)
    totals = _segment_sums(w[:, order], starts)  # (B, G)
    before = np.cumsum(totals, axis=1) - totals
    group_of = np.empty_like(gid)
    group_of[order] = gid  # each item's tie group: one gather, no scatter
    return (before + (totals + 1) / 2)[:, group_of], totals


def defined(tg: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """Both sides take at least two distinct values among the drawn pairs."""
    return ((tg > 0).sum(1) >= 2) & ((tp > 0).sum(1) >= 2)


def weighted_spearman(g: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho per row of counts w (B, m) on the expanded multiset; (rho (B,), defined (B,))."""
    rg, tg = weighted_ranks(g, w)
    rp, tp = weighted_ranks(p, w)
    n = w.sum(1, keepdims=True).clip(min=1)
    dg = rg - (w * rg).sum(1, keepdims=True) / n
    dp = rp - (w * rp).sum(1, keepdims=True) / n
    cov, vg, vp = (w * dg * dp).sum(1), (w * dg * dg).sum(1), (w * dp * dp).sum(1)
    ok = defined(tg, tp)
    rho = np.where(ok, cov / np.sqrt(np.where(ok, vg * vp, 1.0)), 0.0)
    return np.clip(rho, -1.0, 1.0), ok


EXACT_FLOAT32 = 1 << 24  # float32 holds every integer below this exactly


class _Inversions:
    """`_discordant` for one integer sequence seq (m,) >= 0: its per-level sorts,
    built once and applied to every chunk of rows of counts.

    Bit by bit from the top: two elements first differ at bit l when they share the
    bits above l; among those, an earlier element with bit l set before a later one
    without is an inversion. Each level is a stable sort of the fixed sequence by its
    higher bits (shared by every row) and a cumulative sum along each row:
    O(m log m) to build, O(B m log max(seq)) a call, O(B m) memory."""

    def __init__(self, seq: np.ndarray) -> None:
        self.levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for level in range(int(seq.max()).bit_length() if len(seq) else 0):
            high = seq >> (level + 1)
            order = np.argsort(high, kind="stable")  # groups by the higher bits, in seq order
            high = high[order]
            starts = np.flatnonzero(np.r_[True, high[1:] != high[:-1]])
            self.levels.append((order, starts, ((seq >> level) & 1)[order].astype(np.uint8)))

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """(B,) weighted strict inversions of the sequence per row of counts w (B, m).
        Rows whose counts sum below 2**24 run in float32, where every running sum of
        counts is still an exact integer; the products are summed in float64."""
        dt = np.float32 if len(w) and w.sum(1).max() < EXACT_FLOAT32 else np.float64
        w = w.astype(dt, copy=False)
        total = np.zeros(len(w))
        for order, starts, bit in self.levels:
            zeros = w[:, order]  # (B, m), in this level's order
            ones = zeros * bit  # the bit-1 elements' weights (uint8 keeps dt)
            zeros -= ones  # the bit-0 elements' weights
            np.cumsum(ones, axis=1, out=ones)  # bit-1 weight up to each element
            base = np.zeros((len(w), len(starts)), dt)  # ... before each group
            base[:, 1:] = ones[:, starts[1:] - 1]
            total += (np.einsum("bm,bm->b", zeros, ones, dtype=np.float64)
                      - np.einsum("bg,bg->b", base, _segment_sums(zeros, starts),
                                  dtype=np.float64))
        return total


def _discordant(seq: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) weighted strict inversions sum_{i<j, seq_i > seq_j} w[:, i] w[:, j] of the
    integer sequence seq (m,) >= 0, per row of counts w (B, m), both in sequence order
    (`_Inversions`)."""
    return _Inversions(seq)(w)


class Kendall:
    """`weighted_kendall` for fixed (g, p): the sorts, tie groups and inversion levels
    built once, applied to every chunk of resamples."""

    def __init__(self, g: np.ndarray, p: np.ndarray) -> None:
        self.order = np.lexsort((p, g))
        _, p_rank = np.unique(p, return_inverse=True)  # dense ranks: ties share one
        gs, ps = g[self.order], p[self.order]
        self.joint = np.flatnonzero(  # (g, p) tie groups
            np.r_[True, (gs[1:] != gs[:-1]) | (ps[1:] != ps[:-1])] if len(g) else [])
        self.ties = [_tie_groups(v)[:2] for v in (g, p)]  # (order, group starts) of g, p
        self.inversions = _Inversions(p_rank[self.order].astype(np.int64))

    def __call__(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if w.shape[1] == 0:
            return np.zeros(len(w)), np.zeros(len(w), dtype=bool)
        ws = w[:, self.order]
        t3 = _segment_sums(ws, self.joint)
        tg, tp = (_segment_sums(w[:, o], starts) for o, starts in self.ties)  # (B, groups)
        n = w.sum(1)
        n0 = n * (n - 1) / 2
        n1, n2 = (tg * (tg - 1) / 2).sum(1), (tp * (tp - 1) / 2).sum(1)
        n3 = (t3 * (t3 - 1) / 2).sum(1)
        s = n0 - n1 - n2 + n3 - 2 * self.inversions(ws)
        ok = defined(tg, tp)
        tau = np.where(ok, s / np.sqrt(np.where(ok, (n0 - n1) * (n0 - n2), 1.0)), 0.0)
        return np.clip(tau, -1.0, 1.0), ok


def weighted_kendall(g: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall tau-b per row of counts w (B, m) on the expanded multiset; (tau (B,), defined (B,)).

    tau-b = S / sqrt((n0 - n1)(n0 - n2)) with S = concordant - discordant pairs, n0 =
    N(N-1)/2 and n1, n2 the pairs tied on g, on p (copies of one pair are tied on
    both sides). With the pairs sorted by (g, p), a discordant pair is an inversion
    of p's ranks (`_discordant`), and S = n0 - n1 - n2 + n3 - 2 D, n3 the pairs tied
    on both (Knight's method, weighted). O(B m log m) time, O(B m) memory: callers
    pass the resamples in chunks (`_pair_weights`), through one `Kendall`."""
    return Kendall(g, p)(w)
