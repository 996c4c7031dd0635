"""Mini-batches of cultures and their sampled neighbourhoods (pure numpy/torch).

Training no longer runs the GNN over every item each step. An `ItemStore`
holds what a worker reads from (shared read-only: item vectors per modality,
the item graph as one CSR over a global node space, the cultures and themes
of the items, and per culture and head the normalised mean of its items' raw
vectors for the relational term's reference). A `PassSampler` turns a
worker's shard of the items into a stream of steps: within a pass every
shard item is a seed exactly once (shuffled per culture, cut into even chunks
of at most `items_per_culture`, the chunks shuffled and dealt evenly over the
pass's steps, at most `batch_cultures` a step), and the pass index and
position follow from the global step alone, so a resumed run draws the same
batches. `sample_batch` expands a step's seeds by their sampled k-hop
neighbourhood (`graph.sample`) and cuts out one `ModalityGraph` per modality
whose `pool` mask marks the seeds: only seeds are pooled into culture tokens,
neighbours only pass messages.

Shapes are bounded by the batch (batch_cultures x items_per_culture seeds,
times the fan-outs), never by N; the reference is (B, B) from (C, d) means,
never C x C.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from culturesim_ray.graph.sample import CSRGraph, sample_neighbourhood
from culturesim_ray.models.culturesim import ModalityGraph

GENERAL = "general"


@dataclass
class ItemStore:
    """modalities: sorted; x[m] (N_m, d) float32 (an array or a memory map);
    culture[m] (N_m,) int64 global culture ids; themes[m] (N_m, T) bool;
    csr: incoming edges over global node ids (node = offsets[m] + row);
    relation_names[code] per edge relation code (same-modality edges of any
    relation join the modality's own graph; cross-modal ones are typed by
    (source modality, relation) for the hetero variant); means[head][m]:
    (C, d_m) float32 normalised culture means of L2-normalised items (zero where
    the culture has none) and has[head][m] (C,) bool."""

    modalities: list[str]
    x: dict[str, np.ndarray]
    culture: dict[str, np.ndarray]
    themes: dict[str, np.ndarray]
    csr: CSRGraph
    relation_names: list[str]
    cultures: list[str]
    theme_names: list[str]
    means: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    has: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seedable: np.ndarray | None = None  # node ids a step may seed from (None: all)

    def shards(self, world: int, chunk: int = 1) -> list[np.ndarray]:
        """The seedable nodes of each of `world` workers, sorted.

        chunk = m (a step's items per culture): each culture's n nodes are cut into
        ceil(n / m) even chunks (sizes differ by one at most, as `PassSampler` cuts
        them), dealt to the workers in turn (culture c's j-th chunk to worker
        (c + j) % world), so a worker's share of a culture is whole chunks: W workers
        together cut the pass into the same number of chunks as one worker does, each
        takes 1/W of the steps (dealing single nodes left every worker a partial chunk
        per culture), and their steps carry as many seeds as each other's (runs of m
        and a remainder did not: a lockstep step waits for the worker that drew more
        remainders). chunk = 1: every world-th node."""
        nodes = (np.arange(self.num_items, dtype=np.int64) if self.seedable is None
                 else np.asarray(self.seedable, np.int64))
        if chunk <= 1 or world == 1:
            return [nodes[r::world] for r in range(world)]
        culture = self.node_culture()[nodes]
        order = np.argsort(culture, kind="stable")
        nodes, culture = nodes[order], culture[order]
        first = np.r_[0, np.flatnonzero(culture[1:] != culture[:-1]) + 1]
        size = np.diff(np.r_[first, len(nodes)])
        rank_in_culture = np.arange(len(nodes)) - np.repeat(first, size)
        owner = (culture + even_chunk(rank_in_culture, np.repeat(size, size), chunk)) % world
        return [np.sort(nodes[owner == r]) for r in range(world)]

    @property
    def offsets(self) -> dict[str, int]:
        out, at = {}, 0
        for m in self.modalities:
            out[m] = at
            at += len(self.culture[m])
        return out

    @property
    def num_items(self) -> int:
        return sum(len(c) for c in self.culture.values())

    @property
    def in_dims(self) -> dict[str, int]:
        return {m: int(self.x[m].shape[1]) for m in self.modalities}

    def node_culture(self) -> np.ndarray:
        """(N,) global culture id of every node, in node order."""
        return np.concatenate([self.culture[m] for m in self.modalities])

    def item_means(self) -> dict[str, Tensor]:
        """Per modality the mean input vector (for the branches' centring)."""
        return {m: torch.from_numpy(_chunked_mean(self.x[m])) for m in self.modalities}


def _chunked_mean(x: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    total = np.zeros(x.shape[1], np.float64)
    for i in range(0, len(x), chunk):
        total += np.asarray(x[i:i + chunk], np.float64).sum(axis=0)
    return (total / max(1, len(x))).astype(np.float32)


def culture_means(x: np.ndarray, culture: np.ndarray, n_cultures: int,
                  rows: np.ndarray | None = None, chunk: int = 16_384
                  ) -> tuple[np.ndarray, np.ndarray]:
    """((C, d) float32 normalised mean of the L2-normalised rows per culture, (C,) bool
    has-items), read in chunks (x may be a memory map); rows: only these rows."""
    d = x.shape[1]
    sums = np.zeros((n_cultures, d), np.float64)
    has = np.zeros(n_cultures, bool)
    rows = np.arange(len(x)) if rows is None else np.asarray(rows, np.int64)
    for i in range(0, len(rows), chunk):
        r = rows[i:i + chunk]
        v = np.asarray(x[r], np.float64)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        c = culture[r]
        np.add.at(sums, c, v) if len(r) < 1024 else _add_sorted(sums, c, v)
        has[c] = True
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32), has


def _add_sorted(sums: np.ndarray, c: np.ndarray, v: np.ndarray) -> None:
    order = np.argsort(c, kind="stable")
    cs = c[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    sums[cs[starts]] += np.add.reduceat(v[order], starts, axis=0)


def fill_means(store: ItemStore) -> None:
    """Compute `store.means` / `store.has` for the general head and every theme."""
    n = len(store.cultures)
    for m in store.modalities:
        mu, has = culture_means(store.x[m], store.culture[m], n)
        store.means.setdefault(GENERAL, {})[m], store.has.setdefault(GENERAL, {})[m] = mu, has
        for t, theme in enumerate(store.theme_names):
            rows = np.flatnonzero(store.themes[m][:, t])
            mu, has = culture_means(store.x[m], store.culture[m], n, rows)
            store.means.setdefault(theme, {})[m] = mu
            store.has.setdefault(theme, {})[m] = has


def batch_reference(store: ItemStore, cultures: np.ndarray, head: str) -> Tensor:
    """(B, B) float64 reference cosines of the given cultures for `head`: the cosine of
    their mean raw vectors averaged over the modalities both have (NaN where none);
    the same definition as `training.step.reference_similarity`, on B rows only."""
    b = len(cultures)
    total = np.zeros((b, b))
    count = np.zeros((b, b))
    for m in store.modalities:
        mu = store.means[head][m][cultures].astype(np.float64)
        has = store.has[head][m][cultures]
        both = (has[:, None] & has[None, :]).astype(np.float64)
        total += (mu @ mu.T) * both
        count += both
    out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return torch.from_numpy(out)


def shard_rows(num_nodes: int, rank: int, world: int) -> np.ndarray:
    """The global node ids worker `rank` of `world` seeds from: every world-th node."""
    return np.arange(rank, num_nodes, world, dtype=np.int64)


def even_chunk(rank: np.ndarray, size: np.ndarray, m: int) -> np.ndarray:
    """The chunk of the rank-th of `size` nodes when they are cut into ceil(size / m)
    chunks as `np.array_split` cuts them (the first size % k one node larger)."""
    k = -(-size // m)
    small, extra = size // k, size % k
    big = extra * (small + 1)  # the nodes of the larger chunks
    return np.where(rank < big, rank // (small + 1), extra + (rank - big) // small)


class PassSampler:
    """Seeds per step from a shard; a pass shows every shard node once as a seed,
    each culture's nodes in ceil(n / m) even chunks.

    steps_per_pass is the same on every worker (from the largest shard: its chunks
    over b), so collective calls line up. A pass's chunks are dealt to its steps
    evenly (L chunks over S steps: floor or ceil of L / S, at most b each), so every
    step of every worker holds about as many seeds: a lockstep step waits for the
    slowest worker, and W workers' pass does the work of one worker's pass (full
    steps padded by wrapping around did more). Only a shard with fewer chunks than
    steps wraps around, so that no step is empty."""

    def __init__(self, node_culture: np.ndarray, shard: np.ndarray, batch_cultures: int,
                 items_per_culture: int, seed: int, rank: int, steps_per_pass: int) -> None:
        self.node_culture, self.shard = node_culture, shard
        self.b, self.m = batch_cultures, items_per_culture
        self.seed, self.rank, self.steps_per_pass = seed, rank, max(1, steps_per_pass)
        self._pass: int | None = None
        self._chunks: list[np.ndarray] = []
        self._bounds = np.zeros(1, np.int64)

    @staticmethod
    def chunks_of(node_culture: np.ndarray, shard: np.ndarray, items_per_culture: int) -> int:
        """How many chunks a shard cuts into (for steps_per_pass)."""
        counts = np.bincount(node_culture[shard]) if len(shard) else np.zeros(0, np.int64)
        return int(np.ceil(counts / items_per_culture).sum())

    @classmethod
    def steps_for(cls, node_culture: np.ndarray, shards: Sequence[np.ndarray],
                  batch_cultures: int, items_per_culture: int) -> int:
        """Steps per pass: the largest shard's chunks over batch_cultures."""
        most = max(cls.chunks_of(node_culture, s, items_per_culture) for s in shards)
        return max(1, -(-most // batch_cultures))

    def _build(self, p: int) -> None:
        rng = np.random.default_rng([self.seed, self.rank, p, 7])
        rows = self.shard[rng.permutation(len(self.shard))]
        c = self.node_culture[rows]
        order = np.argsort(c, kind="stable")
        rows, c = rows[order], c[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]]) if len(c) else np.zeros(0, int)
        size = np.diff(np.r_[starts, len(c)])
        rank = np.arange(len(c)) - np.repeat(starts, size)
        chunk = even_chunk(rank, np.repeat(size, size), self.m)  # as the shards are dealt
        cut = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (chunk[1:] != chunk[:-1])])
        chunks = np.split(rows, cut[1:]) if len(rows) else []
        chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        while chunks and len(chunks) < self.steps_per_pass:  # a chunk for every step
            chunks = chunks + chunks[:self.steps_per_pass - len(chunks)]
        self._pass, self._chunks = p, chunks
        self._bounds = np.arange(self.steps_per_pass + 1) * len(chunks) // self.steps_per_pass

    def seeds(self, step: int) -> np.ndarray:
        """Seed node ids of global step `step` (deterministic in seed, rank, step)."""
        p, j = divmod(step, self.steps_per_pass)
        if self._pass != p:
            self._build(p)
        part = self._chunks[self._bounds[j]:self._bounds[j + 1]]
        return np.concatenate(part) if part else np.zeros(0, np.int64)


@dataclass
class Batch:
    """graphs: per modality the sampled subgraph (culture = local slot, -1 for
    non-seed nodes; pool = the seeds); culture_ids (B,) global culture of each
    local slot (-1 = unused slot); n_slots = B, the same on every worker."""

    graphs: dict[str, ModalityGraph]
    culture_ids: Tensor
    n_slots: int
    references: dict[str, Tensor]
    nodes: int


def sample_batch(store: ItemStore, seeds: np.ndarray, n_slots: int, fanouts: Sequence[int],
                 rng: np.random.Generator, heads: Sequence[str] = (GENERAL,),
                 hetero: bool = False) -> Batch:
    """The seeds' sampled neighbourhood cut into per-modality graphs (see the module
    docstring); references for `heads` on the batch's cultures."""
    sub = sample_neighbourhood(store.csr, seeds, fanouts, rng)
    nodes = sub.nodes
    offsets = store.offsets
    bounds = np.array([offsets[m] for m in store.modalities] + [store.num_items])
    mod_of = np.searchsorted(bounds, nodes, side="right") - 1  # modality index per node
    is_seed = np.zeros(len(nodes), bool)
    is_seed[:sub.num_seeds] = True
    # each node's hop from the seeds; rows keep the nodes' order, so a modality's
    # rows are sorted by it too (`ModalityGraph.depth_prefix`)
    depth = np.repeat(np.arange(len(sub.hop_sizes)), sub.hop_sizes)
    seed_cultures = np.empty(sub.num_seeds, np.int64)
    local_row = np.empty(len(nodes), np.int64)
    for j in range(len(store.modalities)):
        sel = np.flatnonzero(mod_of == j)
        local_row[sel] = np.arange(len(sel))
    for j, m in enumerate(store.modalities):
        sel = np.flatnonzero(mod_of[:sub.num_seeds] == j)
        seed_cultures[sel] = store.culture[m][nodes[sel] - offsets[m]]
    uniq = np.unique(seed_cultures)
    if len(uniq) > n_slots:
        raise ValueError(f"{len(uniq)} cultures in a batch of {n_slots} slots")
    slot = np.full(len(store.cultures), -1, np.int64)
    slot[uniq] = np.arange(len(uniq))
    culture_ids = np.full(n_slots, -1, np.int64)
    culture_ids[:len(uniq)] = uniq
    src_mod, dst_mod = mod_of[sub.edge_index[0]], mod_of[sub.edge_index[1]]
    rel = store.csr.relations[sub.edge_ids] if len(sub.edge_ids) else np.zeros(0, np.int16)
    graphs = {}
    for j, m in enumerate(store.modalities):
        sel = np.flatnonzero(mod_of == j)
        if not len(sel):
            continue
        rows = nodes[sel] - offsets[m]
        order = np.argsort(rows)  # ascending rows read a memory map in order
        x = torch.from_numpy(np.ascontiguousarray(
            np.asarray(store.x[m][rows[order]], np.float32)[np.argsort(order)]))
        culture = np.where(is_seed[sel], slot[store.culture[m][rows]], -1)
        same = (src_mod == j) & (dst_mod == j)
        ei = local_row[sub.edge_index[:, same]]
        incoming = {}
        if hetero:
            for s_j, s_m in enumerate(store.modalities):
                if s_j == j:
                    continue
                cross = (src_mod == s_j) & (dst_mod == j)
                for code in np.unique(rel[cross]):
                    e = cross & (rel == code)
                    incoming[(s_m, store.relation_names[int(code)])] = torch.from_numpy(
                        local_row[sub.edge_index[:, e]])
        graphs[m] = ModalityGraph(
            x, torch.from_numpy(ei), torch.from_numpy(culture),
            torch.from_numpy(np.asarray(store.themes[m][rows], bool)), incoming,
            pool=torch.from_numpy(is_seed[sel]),
            depth_prefix=tuple(int(v) for v in np.searchsorted(depth[sel], np.arange(
                len(sub.hop_sizes)), side="right")) if sub.hop_sizes else None)
    refs = {h: batch_reference(store, np.maximum(culture_ids, 0), h) for h in heads
            if h in store.means}
    for r in refs.values():  # unused slots never pair with anything
        unused = torch.from_numpy(culture_ids < 0)
        r[unused, :] = float("nan")
        r[:, unused] = float("nan")
    return Batch(graphs, torch.from_numpy(culture_ids), n_slots, refs, len(nodes))


def store_from_graphs(graphs: dict[str, ModalityGraph], cultures: list[str],
                      themes: list[str]) -> ItemStore:
    """An ItemStore over in-memory item graphs (`training.data.TrainingData.graphs`):
    every modality's own edges (relation "similar") and its incoming cross-modal
    ones, by relation name, in one CSR over the global node space."""
    mods = sorted(graphs)
    offsets, at = {}, 0
    for m in mods:
        offsets[m] = at
        at += int(graphs[m].x.shape[0])
    names = ["similar"]
    src, dst, rel = [], [], []
    for m in mods:
        g = graphs[m]
        ei = g.edge_index.numpy()
        src.append(ei[0] + offsets[m])
        dst.append(ei[1] + offsets[m])
        rel.append(np.zeros(ei.shape[1], np.int16))
        for (s_m, r), e in sorted(g.incoming.items()):
            if r not in names:
                names.append(r)
            e = e.numpy()
            src.append(e[0] + offsets[s_m])
            dst.append(e[1] + offsets[m])
            rel.append(np.full(e.shape[1], names.index(r), np.int16))

    def cat(parts: list[np.ndarray], dt: type) -> np.ndarray:
        return np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)

    csr = CSRGraph.from_edges(cat(src, np.int64), cat(dst, np.int64), at,
                              relations=cat(rel, np.int16))
    store = ItemStore(mods, {m: graphs[m].x.numpy().astype(np.float32, copy=False) for m in mods},
                      {m: graphs[m].culture.numpy().astype(np.int64) for m in mods},
                      {m: graphs[m].themes.numpy().astype(bool) for m in mods},
                      csr, names, list(cultures), list(themes))
    fill_means(store)
    return store
