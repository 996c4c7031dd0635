"""The trained model over the whole corpus, streamed (pure: torch, numpy).

What the train job's export writes (the culture embeddings, the serving state)
needs every item's state at every layer. Held in memory, that is the whole
corpus times (layers + 1) beside a copy of its vectors and of its edges: memory
follows N. Here the store's memory maps are read a block of destination items
at a time:

- `write_layer_states`: per modality, each layer's input states for every item
  (the raw projection, then after each layer) as float32 `.npy` files. A block's
  next states need only its incoming edges (a CSR slice of the store's `full`
  graph) and the previous layer's rows of those edges' sources (read from the
  previous file), so a block is computed as a small subgraph: its own rows first,
  then the sources outside it (`GNNBranch.layer_rows`; the hetero branches get
  every modality's sources and keep the block's rows). Exact: a node's update
  reads its incoming edges and its own state only.
- `culture_sums`: from those files, item states and normalised item vectors
  summed per culture a block at a time (float64 sums: memory C x width, the size
  of the output, not N), and where asked the normalised vectors' scatter (d x d);
- `culture_heads` (`CultureSim.export_heads`) and `map_whitening` (the culture
  map's within-culture whitening, `ops.whiten`) from those sums: one pass over
  the store serves both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor, nn

from culturesim_ray import vectors
from culturesim_ray.models.branch import SELF_RELATION
from culturesim_ray.models.culturesim import CultureSim
from culturesim_ray.ops.whiten import culture_whitening
from culturesim_ray.training.batch import ItemStore
from culturesim_ray.training.data import TrainingData

BLOCK = 16_384  # destination items per block (a block's messages: its edges x hidden)


def state_path(root: str, modality: str, i: int) -> str:
    """The file of `modality`'s states entering layer i (i = layers: the branch output)."""
    return os.path.join(root, modality, f"state-{i}.npy")


def _rows(a: np.ndarray, start: int, stop: int) -> Tensor:
    return torch.from_numpy(np.array(a[start:stop], dtype=np.float32))


def _local(rows: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a block's subgraph: the block [start, stop) first, then the other
    `rows` (sorted, once); returns (node rows, each of `rows`' local index)."""
    inside = (rows >= start) & (rows < stop)
    outside = np.unique(rows[~inside])
    local = np.where(inside, rows - start, (stop - start) + np.searchsorted(outside, rows))
    return np.concatenate([np.arange(start, stop), outside]), local


def _block_edges(store: ItemStore, m: str, start: int, stop: int
                 ) -> dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]:
    """The edges into rows [start, stop) of modality m by edge type: (source rows in
    the source modality, destination rows in m). Same-modality edges of any relation
    form (m, SELF_RELATION, m), as `CultureSim`'s homo branches read them."""
    csr, offsets = store.csr, store.offsets
    g0, g1 = offsets[m] + start, offsets[m] + stop
    ptr = np.asarray(csr.indptr[g0:g1 + 1], np.int64)
    src = np.asarray(csr.indices[ptr[0]:ptr[-1]], np.int64)
    dst = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(ptr))
    bounds = np.array([offsets[s] for s in store.modalities] + [store.num_items])
    s_mod = np.searchsorted(bounds, src, side="right") - 1
    j = store.modalities.index(m)
    out = {}
    same = s_mod == j
    out[(m, SELF_RELATION, m)] = (src[same] - offsets[m], dst[same])
    if (~same).any():
        rel = np.asarray(csr.relations[ptr[0]:ptr[-1]])
        for s_j, s_m in enumerate(store.modalities):
            cross = s_mod == s_j
            if s_j == j or not cross.any():
                continue
            for code in np.unique(rel[cross]):
                e = cross & (rel == code)
                out[(s_m, store.relation_names[int(code)], m)] = (src[e] - offsets[s_m], dst[e])
    return out


def _next_block(model: CultureSim, i: int, m: str, prev: dict[str, np.ndarray],
                store: ItemStore, start: int, stop: int) -> Tensor:
    """Rows [start, stop) of modality m after layer i, from every modality's layer-i
    input states `prev` (arrays or memory maps)."""
    edges = _block_edges(store, m, start, stop)
    branch = model.branches[m]
    src, dst = edges[(m, SELF_RELATION, m)]
    if model.cfg.graph == "homo":
        nodes, local = _local(src, start, stop)
        h = torch.from_numpy(np.asarray(prev[m][nodes], np.float32))
        ei = torch.from_numpy(np.stack([local, dst - start]))
        return branch.layer_rows(i, h, ei, stop - start)
    states, used = {}, {}
    own_nodes, own_local = _local(src, start, stop)
    for s in prev:  # every modality takes part, as in the whole-graph forward
        if s == m:
            states[s] = torch.from_numpy(np.asarray(prev[s][own_nodes], np.float32))
            continue
        rows = np.concatenate([e[0] for t, e in edges.items() if t[0] == s] or
                              [np.zeros(0, np.int64)])
        nodes = np.unique(rows)
        states[s] = torch.from_numpy(np.asarray(prev[s][nodes], np.float32))
        for t, (r, d) in edges.items():
            if t[0] == s:
                used[t] = torch.from_numpy(np.stack([np.searchsorted(nodes, r), d - start]))
    used[(m, SELF_RELATION, m)] = torch.from_numpy(np.stack([own_local, dst - start]))
    return branch.layer(i, states, used)[:stop - start]


@torch.inference_mode()
def write_layer_states(model: CultureSim, store: ItemStore, root: str,
                       block: int = BLOCK) -> dict[str, list[np.ndarray]]:
    """Per modality of the model, float32 files root/<m>/state-<i>.npy, i = 0 ..
    layers: the states entering each layer, then the branch output (`CultureSim.
    layer_inputs` over the whole corpus), computed `block` items at a time; returns
    them as read-only memory maps."""
    model.eval()
    mods = [m for m in model.modalities if m in store.x]
    hidden = model.cfg.hidden
    for m in mods:
        os.makedirs(os.path.join(root, m), exist_ok=True)
        n = len(store.x[m])
        out = np.lib.format.open_memmap(state_path(root, m, 0), "w+", np.float32, (n, hidden))
        for a in range(0, n, block):
            out[a:a + block] = model.branches[m].project(_rows(store.x[m], a, a + block)).numpy()
        out.flush()
        del out
    for i in range(model.cfg.layers):
        prev = {m: np.load(state_path(root, m, i), mmap_mode="r") for m in mods}
        for m in mods:
            n = len(prev[m])
            out = np.lib.format.open_memmap(state_path(root, m, i + 1), "w+", np.float32,
                                            (n, hidden))
            for a in range(0, n, block):
                b = min(a + block, n)
                out[a:b] = _next_block(model, i, m, prev, store, a, b).numpy()
            out.flush()
            del out
    return {m: [np.load(state_path(root, m, i), mmap_mode="r")
                for i in range(model.cfg.layers + 1)] for m in mods}


@dataclass
class CultureSums:
    """Per modality, float64 sums by culture over every item of a store: what the
    culture embeddings and the culture map's whitening are made of (memory C x
    width and d x d, the size of the outputs, not N).

    cultures: C, the store's culture count; totals (C, hidden): item states (branch
    output + raw projection); counts (C,): items; raw[h] (C, d) / raw_n[h] (C,):
    L2-normalised item vectors and their count, h None for every item, a theme for
    its items (empty without the raw residual); scatter (d, d): the sum of x x^T of
    the normalised items (where asked for)."""

    cultures: int
    totals: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, Tensor] = field(default_factory=dict)
    raw: dict[str, dict[str | None, Tensor]] = field(default_factory=dict)
    raw_n: dict[str, dict[str | None, Tensor]] = field(default_factory=dict)
    scatter: dict[str, Tensor] = field(default_factory=dict)


@torch.inference_mode()
def culture_sums(model: CultureSim, store: ItemStore, states: dict[str, list[np.ndarray]],
                 block: int = BLOCK, scatter: bool = False) -> CultureSums:
    """`CultureSums` of every item of the store from `write_layer_states`' files, a
    block at a time; `scatter`: also each modality's x^T x (needs the raw residual)."""
    if scatter and model.cfg.raw_weight <= 0:
        raise ValueError("culture_sums: the scatter of the raw vectors needs a model "
                         "with a raw residual (raw_weight > 0)")
    c = len(store.cultures)
    themes = model.cfg.themes if (model.cfg.theme_raw and model.cfg.raw_weight > 0) else []
    theme_col = {t: store.theme_names.index(t) for t in themes}
    sums = CultureSums(c)
    for m, files in states.items():
        d = store.x[m].shape[1]
        totals = sums.totals[m] = torch.zeros(c, model.cfg.hidden, dtype=torch.float64)
        counts = sums.counts[m] = torch.zeros(c, dtype=torch.float64)
        if model.cfg.raw_weight > 0:
            sums.raw[m] = {h: torch.zeros(c, d, dtype=torch.float64) for h in [None, *themes]}
            sums.raw_n[m] = {h: torch.zeros(c, dtype=torch.float64) for h in [None, *themes]}
        if scatter:
            sums.scatter[m] = torch.zeros(d, d, dtype=torch.float64)
        for a in range(0, len(files[0]), block):
            cul = torch.from_numpy(np.asarray(store.culture[m][a:a + block], np.int64))
            s = _rows(files[-1], a, a + block) + _rows(files[0], a, a + block)
            totals.index_add_(0, cul, s.double())
            counts.index_add_(0, cul, torch.ones(len(cul), dtype=torch.float64))
            if model.cfg.raw_weight <= 0:
                continue
            x = nn.functional.normalize(_rows(store.x[m], a, a + block), dim=1).double()
            if scatter:
                sums.scatter[m] += x.T @ x
            tb = np.asarray(store.themes[m][a:a + block], bool)
            for h in [None, *themes]:
                k = slice(None) if h is None else torch.from_numpy(tb[:, theme_col[h]])
                sums.raw[m][h].index_add_(0, cul[k], x[k])
                sums.raw_n[m][h].index_add_(0, cul[k],
                                            torch.ones(len(cul[k]), dtype=torch.float64))
    return sums


@torch.inference_mode()
def heads_from_sums(model: CultureSim, sums: CultureSums) -> dict[str, Tensor]:
    """`CultureSim.export_heads` from a store's `CultureSums`."""
    model.eval()
    c = sums.cultures
    tokens, mask = model.tokens_from_sums({m: t.float() for m, t in sums.totals.items()},
                                          {m: n.float() for m, n in sums.counts.items()}, c)

    def raw_of(h: str | None) -> Tensor:
        return model.raw_from_sums({m: r[h].float() for m, r in sums.raw.items()},
                                   {m: n[h].float() for m, n in sums.raw_n.items()}, c)

    out = model.heads(tokens, mask, raw_of(None) if model.cfg.raw_weight > 0 else None)
    themes = model.cfg.themes if (model.cfg.theme_raw and model.cfg.raw_weight > 0) else []
    for t in themes:
        out[t] = model.general_embedding(out[t], raw_of(t)[out["cultures"]])
    return out


def culture_heads(model: CultureSim, store: ItemStore, states: dict[str, list[np.ndarray]],
                  block: int = BLOCK) -> dict[str, Tensor]:
    """`CultureSim.export_heads` over every item of the store, from `write_layer_states`'
    files (item state = branch output + raw projection), a block at a time."""
    return heads_from_sums(model, culture_sums(model, store, states, block))


def map_whitening(sums: CultureSums, shrink: float) -> dict[str, np.ndarray]:
    """modality -> (d, d) float32 whitening of the culture map (`ops.whiten`) from a
    store's `CultureSums` with their scatter: its L2-normalised item vectors and their
    cultures, the items the exported raw slots average."""
    if not sums.scatter:
        raise ValueError("map_whitening: the sums hold no scatter (culture_sums(..., "
                         "scatter=True))")
    return {m: culture_whitening(xx, sums.raw[m][None], sums.raw_n[m][None], shrink)
            .float().numpy() for m, xx in sorted(sums.scatter.items())}


def culture_table(out: dict[str, Tensor], cultures: list[str], themes: list[str]) -> pa.Table:
    """The culture-embeddings table (`vectors.culture_table`) of `export_heads`' output."""
    names = pa.array(cultures, pa.string()).take(pa.array(out["cultures"].cpu().numpy()))
    return vectors.culture_table({h: (names, out[h].detach().cpu().numpy())
                                  for h in ["general", *themes]})


def export_culture_embeddings(model: CultureSim, data: TrainingData) -> pa.Table:
    """culture, head, vector for the general head and every theme head (eval mode, all
    items held in memory; `CultureSim.export_heads`: a theme's vector carries the raw
    slots of the culture's items of that theme when the model's `theme_raw`). The
    train job streams the same from its store (`write_layer_states`, `culture_heads`)."""
    model.eval()
    with torch.no_grad():
        out = model.export_heads(data.graphs, len(data.cultures), block=65_536)
    return culture_table(out, data.cultures, model.cfg.themes)
