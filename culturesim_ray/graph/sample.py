"""Mini-batch neighbourhood sampling over a CSR item graph.

The fusion model runs PyG GNN convs over per-modality item graphs. Mini-batch training picks
a few seed items and their sampled k-hop neighbourhoods instead of the full graph. PyG's
`NeighborLoader` would do this, but it needs compiled extensions (pyg-lib or torch-sparse)
that cannot be installed here, so this module is the project's own sampler, in plain numpy.

Design:
- Edges follow the torch_geometric convention: `edge_index[0]` is the source and
  `edge_index[1]` the destination, messages flow source -> destination. A node aggregates
  from the sources of its incoming edges, so `CSRGraph` stores the *incoming* adjacency:
  row i holds the sources of the edges into i, sorted by (source, relation).
- `CSRGraph.from_edges` is vectorised (one sort, run starts, `np.maximum.reduceat`) so that
  tens of millions of edges build in seconds; no Python loop runs over edges.
- `sample_neighbourhood` expands one frontier per hop. All candidate edge positions of the
  frontier are gathered at once (`np.repeat` + `arange` from `indptr`); rows with more
  incoming edges than the fanout draw a random key per edge, are sorted by (row, key) and keep
  the edges ranked below the fanout: a uniform draw without replacement, with no Python loop
  over nodes. Only nodes first reached at the previous hop form the next frontier, so each
  node's incoming edges are sampled at most once and no edge is returned twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# combined (dst, src, relation) sort keys are packed into one int64 while they fit below this
_PACK_LIMIT = 2**63
_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class CSRGraph:
    """Incoming adjacency: for node i, indices[indptr[i]:indptr[i+1]] are the sources of
    the edges into i, weights/relations aligned with them."""

    indptr: np.ndarray  # (n + 1,) int64
    indices: np.ndarray  # (E,) int64
    weights: np.ndarray  # (E,) float32
    relations: np.ndarray  # (E,) int16 relation code per edge

    def __post_init__(self) -> None:
        for name, dtype in (("indptr", np.int64), ("indices", np.int64),
                            ("weights", np.float32), ("relations", np.int16)):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        e = self.indices.shape[0]
        if self.indptr.ndim != 1 or self.indptr.shape[0] < 1:
            raise ValueError("indptr must be a 1-D array of length num_nodes + 1")
        if self.indptr[0] != 0 or self.indptr[-1] != e:
            raise ValueError(f"indptr must run from 0 to num_edges ({e}), "
                             f"got {self.indptr[0]} .. {self.indptr[-1]}")
        if self.weights.shape != (e,) or self.relations.shape != (e,):
            raise ValueError(f"weights {self.weights.shape} and relations "
                             f"{self.relations.shape} must both have shape ({e},)")

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[0])

    @classmethod
    def from_edges(cls, src: np.ndarray, dst: np.ndarray, num_nodes: int,
                   weights: np.ndarray | None = None, relations: np.ndarray | None = None,
                   symmetric: bool = False) -> CSRGraph:
        """symmetric=True adds every edge reversed as well. Duplicate (src, dst, relation)
        triples are merged keeping the largest weight; self loops dropped; out-of-range
        ids raise ValueError naming the first bad edge. Vectorised numpy (np.lexsort /
        np.unique / np.bincount-style), no Python loop over edges: it must handle
        20 million edges in seconds."""
        n = int(num_nodes)
        if n < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        src, dst = np.asarray(src), np.asarray(dst)
        if src.ndim != 1 or src.shape != dst.shape:
            raise ValueError(f"src {src.shape} and dst {dst.shape} must be 1-D of equal length")
        e = src.shape[0]
        for name, arr in (("src", src), ("dst", dst)):
            if e and not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{name} must hold integer node ids, got dtype {arr.dtype}")
        src, dst = src.astype(np.int64, copy=False), dst.astype(np.int64, copy=False)
        bad = (src < 0) | (src >= n) | (dst < 0) | (dst >= n)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"edge {i} ({src[i]} -> {dst[i]}) has a node id outside "
                             f"[0, {n}) ({int(bad.sum())} bad edge(s) in all)")
        w = _edge_array(weights, e, np.float32, "weights", 1.0)
        rel = _edge_array(relations, e, np.int16, "relations", 0)
        if symmetric:
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
            w, rel = np.concatenate([w, w]), np.concatenate([rel, rel])
        keep = src != dst
        if not keep.all():
            src, dst, w, rel = src[keep], dst[keep], w[keep], rel[keep]
        if src.shape[0] == 0:
            return cls(np.zeros(n + 1, np.int64), np.zeros(0, np.int64),
                       np.zeros(0, np.float32), np.zeros(0, np.int16))
        order, new_run = edge_order(dst, src, rel, n)
        starts = np.flatnonzero(new_run)
        dst_u = dst[order[starts]]
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(dst_u, minlength=n), out=indptr[1:])
        return cls(indptr, src[order[starts]], np.maximum.reduceat(w[order], starts),
                   rel[order[starts]])

    def degree(self) -> np.ndarray:
        """In-degree per node, (n,) int64."""
        return np.diff(self.indptr)


def _edge_array(values: np.ndarray | None, e: int, dtype: type, name: str,
                default: float) -> np.ndarray:
    """Per-edge `values` checked against E edges and cast to `dtype`, or `default` everywhere."""
    if values is None:
        return np.full(e, default, dtype)
    arr = np.asarray(values)
    if arr.shape != (e,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({e},)")
    if dtype is np.int16:
        if e and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"relations must be integer codes, got dtype {arr.dtype}")
        if e and (arr.min() < _INT16.min or arr.max() > _INT16.max):
            raise ValueError(f"relation codes must fit in int16, got {arr.min()} .. {arr.max()}")
    elif e and not np.isfinite(arr).all():
        i = int(np.argmax(~np.isfinite(arr)))
        raise ValueError(f"weights must be finite, edge {i} has {arr[i]}")
    return arr.astype(dtype, copy=False)


def edge_order(dst: np.ndarray, src: np.ndarray, rel: np.ndarray, n_dst: int,
               n_src: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Permutation sorting edges by (dst, src, relation) and a mask, in sorted order, of the
    first edge of each run of equal triples; dst in [0, n_dst), src in [0, n_src) (default
    n_dst)."""
    n_src = n_dst if n_src is None else n_src
    r_min = int(rel.min())
    r_span = int(rel.max()) - r_min + 1
    if n_dst * n_src * r_span < _PACK_LIMIT:
        key = (dst * n_src + src) * r_span + (rel.astype(np.int64) - r_min)
        order = np.argsort(key)
        sk = key[order]
        new_run = np.empty(sk.shape[0], bool)
        new_run[0] = True
        np.not_equal(sk[1:], sk[:-1], out=new_run[1:])
        return order, new_run
    order = np.lexsort((rel, src, dst))
    d, s, r = dst[order], src[order], rel[order]
    new_run = np.empty(d.shape[0], bool)
    new_run[0] = True
    new_run[1:] = (d[1:] != d[:-1]) | (s[1:] != s[:-1]) | (r[1:] != r[:-1])
    return order, new_run


@dataclass(frozen=True)
class Subgraph:
    """A sampled neighbourhood: reached nodes (seeds first) and the sampled edges among them."""

    nodes: np.ndarray  # (n_sub,) int64 global ids; seeds first (first-seen order), then hop by hop
    num_seeds: int
    edge_index: np.ndarray  # (2, E_sub) int64 LOCAL ids, source row 0, destination row 1
    edge_ids: np.ndarray  # (E_sub,) int64 positions into csr.indices
    # nodes first reached at hop 0 (the seeds), 1, 2, ...: nodes[:hop_sizes[0]] are the
    # seeds, the next hop_sizes[1] hop 1, ... (empty: not recorded)
    hop_sizes: tuple[int, ...] = ()


def _first_seen_unique(ids: np.ndarray) -> np.ndarray:
    """The distinct values of `ids` in the order they first occur."""
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


def _sample_frontier(csr: CSRGraph, frontier: np.ndarray, fanout: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sampled incoming edges of `frontier`: (edge positions into csr.indices, destination
    global ids), grouped by frontier row in frontier order, CSR order within a row."""
    starts = csr.indptr[frontier]
    deg = csr.indptr[frontier + 1] - starts
    total = int(deg.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row_off = np.cumsum(deg) - deg  # offset of each row's block among the candidates
    rows = np.repeat(np.arange(frontier.shape[0]), deg)
    pos = np.repeat(starts - row_off, deg) + np.arange(total)
    heavy = deg > fanout if fanout >= 0 else np.zeros(deg.shape[0], bool)
    if heavy.any():
        cand_heavy = heavy[rows]
        rows_h = rows[cand_heavy]
        deg_h = deg[heavy]
        order = np.lexsort((rng.random(rows_h.shape[0]), rows_h))
        rank = np.arange(rows_h.shape[0]) - np.repeat(np.cumsum(deg_h) - deg_h, deg_h)
        keep_h = np.empty(rows_h.shape[0], bool)
        keep_h[order] = rank < fanout
        keep = np.ones(total, bool)
        keep[cand_heavy] = keep_h
        pos, rows = pos[keep], rows[keep]
    return pos, frontier[rows]


def sample_neighbourhood(csr: CSRGraph, seeds: np.ndarray, fanouts: Sequence[int],
                         rng: np.random.Generator) -> Subgraph:
    """k = len(fanouts) hops. Hop h: for each node first reached at hop h-1 (seeds at hop 0),
    up to fanouts[h] of its incoming edges drawn uniformly WITHOUT replacement (all of them
    when the degree is <= fanout); fanout -1 means all. Returns the union of reached nodes
    and the sampled edges. Vectorised: gather all candidate edge positions of the frontier
    at once (np.repeat + arange from indptr), random keys, sort by (row, key), keep rank <
    fanout; no Python loop over nodes."""
    fanouts = [int(f) for f in fanouts]
    if any(f < -1 for f in fanouts):
        raise ValueError(f"fanouts must be >= 0 or -1 (all), got {fanouts}")
    seeds = np.asarray(seeds).ravel()
    if seeds.shape[0] == 0:
        return Subgraph(np.zeros(0, np.int64), 0, np.zeros((2, 0), np.int64),
                        np.zeros(0, np.int64))
    if not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be integer node ids, got dtype {seeds.dtype}")
    seeds = seeds.astype(np.int64, copy=False)
    bad = (seeds < 0) | (seeds >= csr.num_nodes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"seed {i} ({seeds[i]}) is outside [0, {csr.num_nodes})")
    frontier = _first_seen_unique(seeds)
    parts, visited = [frontier], np.sort(frontier)
    edge_pos, edge_dst = [], []
    for fanout in fanouts:
        if frontier.shape[0] == 0:
            break
        pos, dst = _sample_frontier(csr, frontier, fanout, rng)
        edge_pos.append(pos)
        edge_dst.append(dst)
        reached = _first_seen_unique(csr.indices[pos])
        frontier = reached[~np.isin(reached, visited, assume_unique=True)]
        parts.append(frontier)
        visited = np.sort(np.concatenate([visited, frontier]))
    nodes = np.concatenate(parts)
    eids = np.concatenate(edge_pos) if edge_pos else np.zeros(0, np.int64)
    dsts = np.concatenate(edge_dst) if edge_dst else np.zeros(0, np.int64)
    by_id = np.argsort(nodes)
    ids_sorted = nodes[by_id]
    edge_index = np.stack([by_id[np.searchsorted(ids_sorted, csr.indices[eids])],
                           by_id[np.searchsorted(ids_sorted, dsts)]]).astype(np.int64)
    return Subgraph(nodes, int(parts[0].shape[0]), edge_index, eids.astype(np.int64),
                    tuple(int(p.shape[0]) for p in parts))


def to_global_edges(sub: Subgraph) -> np.ndarray:
    """The sampled edges in global node ids, (2, E_sub) int64: sub.nodes[sub.edge_index]."""
    return sub.nodes[sub.edge_index]
