"""Rank correlations on weighted multisets (pure numpy/scipy): item i of the pairs
counted w[b, i] times in row b of a (B, m) array of counts, the form the culture
bootstrap of `report.stats` draws. Ties by average rank; Spearman and Kendall tau-b
are 0.0 on a row where either side is constant (`defined` False there).

The sorts and tie groups depend on the values only, so `RankPlan` builds them once
for (gold, pred) and scores every chunk of resamples with them, both statistics
from one gather of the counts.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy import sparse


def _runs(v: np.ndarray) -> np.ndarray:
    """Start positions of the runs of equal values in v (sorted)."""
    return np.flatnonzero(np.r_[True, v[1:] != v[:-1]]) if len(v) else np.zeros(0, np.int64)


def _run_index(starts: np.ndarray, m: int) -> np.ndarray:
    """(m,) the run each position belongs to, for runs beginning at `starts`."""
    return np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, m]))


def _segment_sums(x: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(B, len(starts)) sums of the runs of columns of x (B, m) that begin at `starts`
    (increasing, from 0). x holds counts, so the sums are exact; with one column a run,
    x itself (not a copy)."""
    if len(starts) == x.shape[1]:
        return x
    return np.add.reduceat(x, starts, axis=1)


def _group_ranks(totals: np.ndarray) -> np.ndarray:
    """(B, G) the average rank of each tie group, from the groups' counts in order."""
    return np.cumsum(totals, axis=1) - totals + (totals + 1) / 2


def weighted_ranks(v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks of v (m,) in the multiset where item i appears w[b, i] times.

    w: (B, m) non-negative counts. Returns (ranks (B, m), tie-group totals (B, G))."""
    order = np.argsort(v, kind="stable")
    starts = _runs(v[order])
    totals = _segment_sums(w[:, order], starts)  # (B, G)
    group_of = np.empty(len(v), dtype=np.int64)
    group_of[order] = _run_index(starts, len(v))  # each item's tie group: one gather
    return _group_ranks(totals)[:, group_of], totals


def defined(tg: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """Both sides take at least two distinct values among the drawn pairs."""
    return ((tg > 0).sum(1) >= 2) & ((tp > 0).sum(1) >= 2)


EXACT_FLOAT32 = 1 << 24  # float32 holds every integer below this exactly
STATISTICS = ("spearman", "kendall")
LOW_PAIRS = 32  # candidate pairs per element `_Inversions` may list for its low levels


def _shared_pairs(blocks: np.ndarray) -> int:
    """Pairs of positions with equal values in blocks (integers >= 0)."""
    c = np.bincount(blocks)
    return int((c * (c - 1) // 2).sum())


def _inverted_pairs(seq: np.ndarray, low: int) -> sparse.csr_matrix:
    """(m, m) CSR with a 1 at (i, j) for every i < j with seq_i > seq_j and the same
    seq >> low: listed a batch of blocks at a time (about m candidates a batch)."""
    m = len(seq)
    index = np.int32 if m < 2**31 else np.int64
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    if low:
        blocks = seq >> low
        pos = np.argsort(blocks, kind="stable")  # block by block, in sequence order
        starts = _runs(blocks[pos])
        sizes = np.diff(np.r_[starts, m])
        batch = np.cumsum(sizes * (sizes - 1) // 2) // max(m, 1)
        cut = np.r_[starts[_runs(batch)], m]
        for a, b in zip(cut[:-1], cut[1:], strict=True):
            at = np.searchsorted(starts, np.arange(a, b), side="right") - 1
            later = starts[at] + sizes[at] - np.arange(a, b) - 1  # partners after each
            i = np.repeat(np.arange(a, b), later)
            j = i + 1 + np.arange(len(i)) - np.repeat(np.cumsum(later) - later, later)
            i, j = pos[i], pos[j]
            keep = seq[i] > seq[j]
            rows.append(i[keep].astype(index))
            cols.append(j[keep].astype(index))
    r = np.concatenate(rows) if rows else np.zeros(0, index)
    c = np.concatenate(cols) if cols else np.zeros(0, index)
    return sparse.csr_matrix((np.ones(len(r)), (r, c)), shape=(m, m))


class _Inversions:
    """Weighted strict inversions sum_{i<j, seq_i > seq_j} w[:, i] w[:, j] of one
    integer sequence seq (m,) >= 0, per row of counts w (B, m) in sequence order;
    built once for seq, applied to every chunk of rows.

    Two elements first differ at one bit l of seq. Low levels (l < low): the
    inverted pairs sharing seq >> low are listed once as a sparse matrix S (about
    m 2**low / 4 of them) and weigh w S w^T, O(B nnz). Higher levels, bit by bit:
    among the elements that share the bits above l, an earlier one with bit l set
    before a later one without is an inversion; each level is a stable sort of the
    fixed sequence by its higher bits (shared by every row) and a cumulative sum
    along each row, O(B m). low is the largest level with at most LOW_PAIRS m
    candidate pairs (ties in seq add candidates, not inversions)."""

    def __init__(self, seq: np.ndarray) -> None:
        m = len(seq)
        bits = int(seq.max()).bit_length() if m else 0
        self.low = 0
        while self.low < bits and _shared_pairs(seq >> (self.low + 1)) <= LOW_PAIRS * m:
            self.low += 1
        self.pairs = _inverted_pairs(seq, self.low)
        self.levels: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for level in range(self.low, bits):
            high = seq >> (level + 1)
            order = np.argsort(high, kind="stable")  # groups by the higher bits, in seq order
            self.levels.append((order, _runs(high[order]),
                                ((seq >> level) & 1)[order].astype(np.uint8)))

    def __call__(self, w: np.ndarray, n: np.ndarray | None = None) -> np.ndarray:
        """(B,) weighted inversions per row of counts w (B, m) (n: their row sums, when
        the caller has them). Products are summed in float64; the levels' running sums
        of counts run in float32 when a row's counts sum below 2**24, where every one
        of them is still an exact integer."""
        total = np.zeros(len(w))
        if self.pairs.nnz:
            wt = np.ascontiguousarray(w.T, dtype=np.float64)  # (m, B): S @ wt runs along B
            total += np.einsum("mb,mb->b", wt, self.pairs @ wt)
        n = w.sum(1) if n is None else n
        dt = np.float32 if len(w) and n.max() < EXACT_FLOAT32 else np.float64
        w = w.astype(dt, copy=False)
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


class RankPlan:
    """Spearman rho and Kendall tau-b of fixed (g, p) on chunks of resample counts.

    Everything runs in one order of the pairs, sorted by (g, p) (`order`; callers
    pass w[:, plan.order]): g's tie groups and the (g, p) tie groups are runs of it
    and p's are runs of one more fixed permutation, so a chunk costs two gathers of
    its counts for both statistics. Kendall: S = n0 - n1 - n2 + n3 - 2 D with n0 =
    N(N-1)/2, n1, n2, n3 the pairs tied on g, on p, on both (copies of one pair are
    tied on both) and D the discordant pairs, the inversions of p's ranks in this
    order (Knight's method, weighted); tau-b = S / sqrt((n0 - n1)(n0 - n2)).
    O(m log m) to build, O(B m log m) time and O(B m) memory a chunk."""

    def __init__(self, g: np.ndarray, p: np.ndarray) -> None:
        m = len(g)
        self.order = np.lexsort((p, g))
        gs, self.ps = g[self.order], p[self.order]
        self.g_starts = _runs(gs)
        self.g_of = None if len(self.g_starts) == m else _run_index(self.g_starts, m)
        self.p_order = np.argsort(self.ps, kind="stable")
        self.p_starts = _runs(self.ps[self.p_order])
        self.p_of = np.empty(m, dtype=np.int64)  # each position's p tie group
        self.p_of[self.p_order] = _run_index(self.p_starts, m)
        self.joint = np.flatnonzero(np.r_[True, (gs[1:] != gs[:-1])
                                          | (self.ps[1:] != self.ps[:-1])] if m else [])

    @cached_property
    def inversions(self) -> _Inversions:
        """Kendall's discordant pairs: inversions of p's dense ranks in plan order."""
        return _Inversions(np.unique(self.ps, return_inverse=True)[1].astype(np.int64))

    def __call__(self, ws: np.ndarray, stats: tuple[str, ...] = STATISTICS
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{"spearman": (rho (B,), defined (B,)), "kendall": (tau, defined)} for counts
        ws (B, m) in plan order; `stats` names the ones wanted."""
        b = len(ws)
        if ws.shape[1] == 0:
            return {k: (np.zeros(b), np.zeros(b, dtype=bool)) for k in stats}
        tg = _segment_sums(ws, self.g_starts)
        tp = _segment_sums(ws[:, self.p_order], self.p_starts)
        ok = defined(tg, tp)
        n = ws.sum(1)
        out = {}
        if "spearman" in stats:
            rg = _group_ranks(tg) if self.g_of is None else _group_ranks(tg)[:, self.g_of]
            rp = _group_ranks(tp)[:, self.p_of]
            size = n[:, None].clip(min=1)
            dg = rg - (ws * rg).sum(1, keepdims=True) / size
            dp = rp - (ws * rp).sum(1, keepdims=True) / size
            cov, vg, vp = (ws * dg * dp).sum(1), (ws * dg * dg).sum(1), (ws * dp * dp).sum(1)
            rho = np.where(ok, cov / np.sqrt(np.where(ok, vg * vp, 1.0)), 0.0)
            out["spearman"] = (np.clip(rho, -1.0, 1.0), ok)
        if "kendall" in stats:
            n0 = n * (n - 1) / 2
            n1, n2 = (tg * (tg - 1) / 2).sum(1), (tp * (tp - 1) / 2).sum(1)
            t3 = _segment_sums(ws, self.joint)
            s = n0 - n1 - n2 + (t3 * (t3 - 1) / 2).sum(1) - 2 * self.inversions(ws, n)
            tau = np.where(ok, s / np.sqrt(np.where(ok, (n0 - n1) * (n0 - n2), 1.0)), 0.0)
            out["kendall"] = (np.clip(tau, -1.0, 1.0), ok)
        return out


def weighted_spearman(g: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rho per row of counts w (B, m) on the expanded multiset; (rho (B,), defined (B,))."""
    plan = RankPlan(g, p)
    return plan(w[:, plan.order], ("spearman",))["spearman"]


def weighted_kendall(g: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall tau-b per row of counts w (B, m) on the expanded multiset; (tau (B,), defined (B,)).
    Many chunks of one (g, p): one `RankPlan`."""
    plan = RankPlan(g, p)
    return plan(w[:, plan.order], ("kendall",))["kendall"]
