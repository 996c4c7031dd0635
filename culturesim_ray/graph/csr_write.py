"""A CSR graph written to `.npy` files from blocks of edges, never holding them all.

`CSRGraph.from_edges` sorts every edge in memory: about 80 bytes an edge at its
peak, so a corpus of 10 million items (some 200 million directed kNN edges) would
need a node with tens of GB for the store task alone. `CSRWriter` gives the same
arrays (byte for byte: the same order, duplicate merging, self loops dropped) from
edge blocks that the caller streams twice:

1. `count(block)` for every block: in-degrees (before duplicates are merged);
2. `fill(block)` for every block, in any order: each edge goes to its destination's
   slot range in temporary memory-mapped files (a counting sort);
3. `finish()`: node range by node range (at most `block_edges` edges each, or one
   node), the slots are sorted by (source, relation), duplicates merged keeping the
   largest weight, and compacted in place; then the final files are written.

What the process holds besides one block: O(num_nodes) int64 pointers. The edges
themselves live in the page cache of files under `root`, which the kernel can drop.
"""

from __future__ import annotations

import os

import numpy as np

from culturesim_ray.graph.sample import edge_order

PARTS = ("indptr", "indices", "weights", "relations")
_TMP = (("src", np.int64), ("rel", np.int16), ("w", np.float32))


class CSRWriter:
    """The CSR graph `<root>/<name>_{indptr,indices,weights,relations}.npy` over
    `num_nodes` nodes (incoming adjacency, as `CSRGraph`); symmetric: every edge is
    added reversed as well. Blocks: src, dst (integer node ids), relations (int16
    codes, default 0) and weights (float32, default 1.0), equal lengths."""

    def __init__(self, root: str, name: str, num_nodes: int, symmetric: bool = True,
                 block_edges: int = 1_000_000) -> None:
        if num_nodes < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        self.root, self.name, self.n = root, name, int(num_nodes)
        self.symmetric, self.block_edges = symmetric, max(1, int(block_edges))
        self.degree = np.zeros(self.n, np.int64)  # directed edges into each node, raw
        self.seen = 0  # edges given to count() so far (for error messages)
        self._ptr: np.ndarray | None = None
        self._cursor: np.ndarray | None = None
        self._tmp: dict[str, np.ndarray] = {}

    def path(self, part: str) -> str:
        return os.path.join(self.root, f"{self.name}_{part}.npy")

    def _directed(self, src: np.ndarray, dst: np.ndarray, relations: np.ndarray | None,
                  weights: np.ndarray | None, check: bool
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        src = np.asarray(src)
        dst = np.asarray(dst)
        if src.ndim != 1 or src.shape != dst.shape:
            raise ValueError(f"src {src.shape} and dst {dst.shape} must be 1-D of equal length")
        e = len(src)
        if check and e:
            for what, arr in (("src", src), ("dst", dst)):
                if not np.issubdtype(arr.dtype, np.integer):
                    raise ValueError(f"{what} must hold integer node ids, got dtype {arr.dtype}")
            bad = (src < 0) | (src >= self.n) | (dst < 0) | (dst >= self.n)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"edge {self.seen + i} ({src[i]} -> {dst[i]}) has a node id "
                                 f"outside [0, {self.n}) ({int(bad.sum())} bad edge(s) in "
                                 f"this block)")
        src, dst = src.astype(np.int64, copy=False), dst.astype(np.int64, copy=False)
        rel = (np.zeros(e, np.int16) if relations is None
               else np.asarray(relations).astype(np.int16, copy=False))
        w = (np.ones(e, np.float32) if weights is None
             else np.asarray(weights).astype(np.float32, copy=False))
        if rel.shape != (e,) or w.shape != (e,):
            raise ValueError(f"relations {rel.shape} and weights {w.shape} must both have "
                             f"shape ({e},)")
        if self.symmetric:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
            rel, w = np.concatenate([rel, rel]), np.concatenate([w, w])
        keep = src != dst
        if not keep.all():
            src, dst, rel, w = src[keep], dst[keep], rel[keep], w[keep]
        return src, dst, rel, w

    def count(self, src: np.ndarray, dst: np.ndarray, relations: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> None:
        """Pass 1: a block's edges counted into their destinations' degrees."""
        if self._ptr is not None:
            raise RuntimeError("count() after fill(): every block is counted first")
        _, d, _, _ = self._directed(src, dst, relations, weights, check=True)
        self.seen += len(src)
        np.add.at(self.degree, d, 1)  # O(block), where bincount would be O(num_nodes)

    def _start_fill(self) -> None:
        self._ptr = np.zeros(self.n + 1, np.int64)
        np.cumsum(self.degree, out=self._ptr[1:])
        self._cursor = self._ptr[:-1].copy()
        total = int(self._ptr[-1])
        os.makedirs(self.root, exist_ok=True)
        for key, dtype in _TMP:
            self._tmp[key] = np.lib.format.open_memmap(self.path(f"tmp_{key}"), "w+", dtype,
                                                       (max(total, 1),))

    def fill(self, src: np.ndarray, dst: np.ndarray, relations: np.ndarray | None = None,
             weights: np.ndarray | None = None) -> None:
        """Pass 2: a block's edges written to their destinations' slots (the blocks
        of pass 1, in any order)."""
        if self._ptr is None:
            self._start_fill()
        s, d, r, w = self._directed(src, dst, relations, weights, check=False)
        if not len(d):
            return
        order = np.argsort(d, kind="stable")
        d = d[order]
        first = np.r_[True, d[1:] != d[:-1]]
        starts = np.flatnonzero(first)
        run = np.diff(np.r_[starts, len(d)])
        pos = self._cursor[d] + (np.arange(len(d)) - np.repeat(starts, run))
        if (pos >= self._ptr[d + 1]).any():
            raise RuntimeError("fill() got more edges into a node than count() saw")
        self._cursor[d[starts]] += run
        self._tmp["src"][pos] = s[order]
        self._tmp["rel"][pos] = r[order]
        self._tmp["w"][pos] = w[order]

    def finish(self) -> int:
        """Pass 3 and the final files; returns the number of edges written."""
        if self._ptr is None:
            self._start_fill()
        ptr, tmp = self._ptr, self._tmp
        if not np.array_equal(self._cursor, ptr[1:]):
            raise RuntimeError("fill() saw fewer edges than count(): stream every block twice")
        indptr = np.zeros(self.n + 1, np.int64)
        out, a = 0, 0
        while a < self.n:
            # the node range [a, b): at most block_edges raw edges, at least one node
            b = max(a + 1, int(np.searchsorted(ptr, ptr[a] + self.block_edges, "right")) - 1)
            b = min(b, self.n)
            e0, e1 = int(ptr[a]), int(ptr[b])
            if e1 > e0:
                s = np.array(tmp["src"][e0:e1])
                r = np.array(tmp["rel"][e0:e1])
                w = np.array(tmp["w"][e0:e1])
                d = np.repeat(np.arange(a, b, dtype=np.int64), np.diff(ptr[a:b + 1]))
                order, new_run = edge_order(d - a, s, r, b - a, self.n)
                starts = np.flatnonzero(new_run)
                k = len(starts)
                tmp["src"][out:out + k] = s[order[starts]]  # out <= e0: compacted in place
                tmp["rel"][out:out + k] = r[order[starts]]
                tmp["w"][out:out + k] = np.maximum.reduceat(w[order], starts)
                per_node = np.bincount(d[order[starts]] - a, minlength=b - a)
                indptr[a + 1:b + 1] = out + np.cumsum(per_node)
                out += k
            else:
                indptr[a + 1:b + 1] = out
            a = b
        np.save(self.path("indptr"), indptr)
        for part, key in (("indices", "src"), ("weights", "w"), ("relations", "rel")):
            with open(self.path(part), "wb") as fh:
                np.lib.format.write_array(fh, tmp[key][:out])
        for key, _ in _TMP:
            del tmp[key]
            os.remove(self.path(f"tmp_{key}"))
        return out
