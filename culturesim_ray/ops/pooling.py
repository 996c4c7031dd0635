"""Culture vectors pooled from item vectors, per head (general + one per theme).

Item vectors are L2-normalised first so long texts do not outweigh short
ones; then a culture's head vector is the mean (or coordinate-wise median) of
its items' vectors — all items for "general", the items carrying theme t for
head t. A culture with no item of a theme has no vector for that head: it is
left out of that head, never given a zero vector that would pose as data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

GENERAL = "general"
POOLINGS = ("mean", "median")


def pool(vectors: np.ndarray, cultures: Sequence[str], themes: Sequence[Sequence[str] | None] | None = None,
         how: str = "mean", min_items: int = 1) -> dict[str, tuple[list[str], np.ndarray]]:
    """head -> (cultures, vectors (n_cultures, d) float32), cultures sorted.

    vectors: (n_items, d); cultures: (n_items,); themes: per item, or None.
    min_items: a culture needs at least this many items in a head to get a vector."""
    if how not in POOLINGS:
        raise ValueError(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}")
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or len(v) != len(cultures):
        raise ValueError(f"pool: vectors {v.shape} do not match {len(cultures)} cultures")
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    agg = np.mean if how == "mean" else np.median
    return {head: (list(members), np.stack([agg(v[idx], axis=0) for idx in members.values()])
                   .astype(np.float32))
            for head, members in head_groups(cultures, themes, min_items).items()}


def head_groups(cultures: Sequence[str], themes: Sequence[Sequence[str] | None] | None = None,
                min_items: int = 1) -> dict[str, dict[str, list[int]]]:
    """head -> culture -> item indices: every item in "general" and in each of its
    themes; cultures sorted, those with fewer than `min_items` items in a head left
    out, heads left with no culture dropped; "general" first, then themes sorted."""
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, c in enumerate(cultures):
        groups[GENERAL][c].append(i)
        for t in (themes[i] if themes is not None and themes[i] is not None else ()):
            groups[t][c].append(i)
    out = {}
    for head in sorted(groups, key=lambda h: (h != GENERAL, h)):
        kept = {c: groups[head][c] for c in sorted(groups[head])
                if len(groups[head][c]) >= min_items}
        if kept:
            out[head] = kept
    return out


def partial_pool(vectors: np.ndarray, cultures: Sequence[str],
                 themes: Sequence[Sequence[str] | None] | None = None,
                 how: str = "mean") -> dict[str, list]:
    """One batch's share of `pool`, to be summed by key across batches (the
    distributed form: Ray Data maps this per batch, shuffles on (head, culture)
    and calls `finish_pool` per partition).

    mean: per (head, culture) of the batch, the sum of the L2-normalised item
    vectors (float64) and their count. median has no such sum: each item's
    normalised vector is passed on (count 1), so the median is exact per culture.
    Returns columns head, culture, n, vector (lists of rows)."""
    if how not in POOLINGS:
        raise ValueError(f"unknown pooling {how!r}; known: {', '.join(POOLINGS)}")
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    heads, cs, ns, vecs = [], [], [], []
    if how == "median":
        for i, c in enumerate(cultures):
            for h in (GENERAL, *(themes[i] if themes is not None and themes[i] is not None else ())):
                heads.append(h)
                cs.append(c)
                ns.append(1)
                vecs.append(v[i])
    else:
        for head, members in head_groups(cultures, themes).items():
            for c, idx in members.items():
                heads.append(head)
                cs.append(c)
                ns.append(len(idx))
                vecs.append(v[idx].sum(axis=0))
    return {"head": heads, "culture": cs, "n": ns,
            "vector": np.stack(vecs) if vecs else np.zeros((0, v.shape[1]))}


def finish_pool(heads: Sequence[str], cultures: Sequence[str], n: np.ndarray, vectors: np.ndarray,
                how: str = "mean", min_items: int = 1) -> dict[str, list]:
    """Combine `partial_pool` rows that share (head, culture): the mean (sum of sums
    over sum of counts) or the median of the items; keys with fewer than
    `min_items` items are left out. Returns columns head, culture, n, vector
    (float32), ordered by (head, culture)."""
    keys: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(heads, cultures, strict=True)):
        keys[key].append(i)
    out_h, out_c, out_n, out_v = [], [], [], []
    v = np.asarray(vectors, dtype=np.float64)
    counts = np.asarray(n, dtype=np.int64)
    for key in sorted(keys):
        rows = keys[key]
        total = int(counts[rows].sum())
        if total < min_items:
            continue
        vec = v[rows].sum(axis=0) / total if how == "mean" else np.median(v[rows], axis=0)
        out_h.append(key[0])
        out_c.append(key[1])
        out_n.append(total)
        out_v.append(vec.astype(np.float32))
    return {"head": out_h, "culture": out_c, "n": out_n,
            "vector": np.stack(out_v) if out_v else np.zeros((0, v.shape[1]), np.float32)}


class RunningMeans:
    """`pool`'s general-head means (items L2-normalised, then averaged per culture),
    accumulated batch by batch: per culture a float64 sum and a count, so memory
    grows with the cultures, not with the items read. `add` each batch, then
    `result()`: (cultures sorted, (n_cultures, d) float32), as `pool` gives."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._sums = np.zeros((0, 0))
        self._counts = np.zeros(0, np.int64)

    def add(self, vectors: np.ndarray, cultures: Sequence[str]) -> None:
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or len(v) != len(cultures):
            raise ValueError(f"RunningMeans: vectors {v.shape} do not match "
                             f"{len(cultures)} cultures")
        if not len(v):
            return
        if not self._index:
            self._sums = np.zeros((0, v.shape[1]))
        elif v.shape[1] != self._sums.shape[1]:
            raise ValueError(f"RunningMeans: vectors of {v.shape[1]} dimensions after "
                             f"{self._sums.shape[1]}")
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)  # a copy
        codes = np.fromiter((self._index.setdefault(c, len(self._index)) for c in cultures),
                            np.int64, len(cultures))
        if len(self._index) > len(self._counts):
            grow = max(len(self._index), 2 * len(self._counts))
            sums = np.zeros((grow, v.shape[1]))
            sums[:len(self._sums)] = self._sums
            self._sums = sums
            self._counts = np.concatenate([self._counts,
                                           np.zeros(grow - len(self._counts), np.int64)])
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        self._sums[sorted_codes[starts]] += np.add.reduceat(v[order], starts, axis=0)
        self._counts += np.bincount(codes, minlength=len(self._counts))

    def result(self) -> tuple[list[str], np.ndarray]:
        names = sorted(self._index)
        rows = np.fromiter((self._index[c] for c in names), np.int64, len(names))
        if not len(rows):
            return [], np.zeros((0, self._sums.shape[1]), np.float32)
        means = self._sums[rows] / self._counts[rows, None]
        return names, means.astype(np.float32)
