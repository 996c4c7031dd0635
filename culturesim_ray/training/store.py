"""The graph stage's output cut into what training workers read (pure: numpy, pyarrow).

`write_store(graph_root, root, ...)` runs once per train job (in a Ray task,
never on the driver) over the item graph of every item of the embed run:

- splits each item by a keyed hash of its id (`training.data.holdout_mask`):
  held out (never trained on, ids for the retrieval benchmarks), validation
  (early stopping; never a training node), training;
- numbers the cultures (sorted) and the themes (those with at least
  `min_theme_items` items), and the nodes (modality by modality, rows in the
  graph's items order);
- writes three CSR graphs over the global node space: `train` (the edges
  among training items: what training samples), `val` (among every item not
  held out: validation seeds are validation items, their neighbours anything
  but held-out items, as a new item meets the corpus), `full` (every edge: the
  export of the culture vectors and the serving state apply the model to the
  whole corpus). The edge files are read a batch at a time, twice
  (`graph.csr_write`: count, then fill), so the task holds O(N) per-node arrays
  and one batch, never every edge;
- and the per-culture means of the training items' normalised vectors per
  head (the relational term's reference).

`open_store(root, which)` memory-maps it all into an `ItemStore` whose
`seedable` nodes are that split's items. kNN edges are symmetrised, all
same-modality relations join the modality's own graph (code 0), cross-modal
ones keep their relation name (the hetero variant); with graph "homo" the
cross-modal edges are left out of the train and val graphs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from culturesim_ray.graph import build as gb
from culturesim_ray.graph.csr_write import CSRWriter
from culturesim_ray.graph.sample import CSRGraph
from culturesim_ray.layout import GraphLayout
from culturesim_ray.training.batch import GENERAL, ItemStore, culture_means
from culturesim_ray.training.data import Strings, as_strings, holdout_mask

TRAIN, VAL, HELD = 0, 1, 2
SAME = "similar"
EDGE_BATCH = 1 << 20  # edge rows read at a time


def _modalities(graph_root: str) -> list[str]:
    with open(os.path.join(graph_root, "manifest.json")) as fh:
        return sorted(json.load(fh)["modalities"])


def item_splits(ids: list[Strings], cultures: list[Strings], holdout: float,
                holdout_seed: int, val_fraction: float, val_max: int) -> list[np.ndarray]:
    """Per modality (N_m,) int8 split codes (TRAIN, VAL, HELD); validation is at most
    val_max items in all (the first rows of each modality, proportionally). ids and
    cultures: per modality, lists or Arrow string arrays."""
    out = []
    for i, c in zip(ids, cultures, strict=True):
        i, c = as_strings(i), as_strings(c)
        held = holdout_mask(i, c, holdout, holdout_seed)
        split = np.where(held, HELD, TRAIN).astype(np.int8)
        rest = np.flatnonzero(~held)
        if val_fraction > 0 and len(rest):
            val = holdout_mask(i.take(rest), c.take(rest), val_fraction, holdout_seed + 1)
            split[rest[val]] = VAL
        out.append(split)
    total = sum(int((s == VAL).sum()) for s in out)
    if total > val_max:
        for s in out:
            rows = np.flatnonzero(s == VAL)
            s[rows[int(len(rows) * val_max / total):]] = TRAIN
    return out


def edge_batches(graph_root: str, mods: list[str], offsets: dict[str, int],
                 names: list[str], cross: set[tuple[str, str, str]],
                 batch_rows: int = EDGE_BATCH) -> Iterator[tuple[np.ndarray, ...]]:
    """Every edge file of the graph, a Parquet batch at a time: (src, dst) over the
    global node space and the relation code (0: within a modality; else the index of
    its name in `names`, which grows as cross-modal relations are met, in the same
    order on every pass; `cross` collects their (src_modality, relation, modality))."""
    mod_set = pa.array(mods, pa.string())
    off = np.array([offsets[m] for m in mods], np.int64)
    for j, m in enumerate(mods):
        d = GraphLayout(graph_root).edges(m)
        files = sorted(f for f in os.listdir(d) if f.endswith(".parquet")) if os.path.isdir(d) else []
        for f in files:
            for b in pq.ParquetFile(os.path.join(d, f)).iter_batches(
                    batch_rows, columns=["src", "dst", "relation", "src_modality"]):
                which = pc.index_in(b.column("src_modality"), value_set=mod_set)
                if which.null_count:
                    bad = pc.filter(b.column("src_modality"), pc.is_null(which))[0]
                    raise ValueError(f"{os.path.join(d, f)}: src_modality {bad.as_py()!r} is "
                                     f"not a modality of the graph ({', '.join(mods)})")
                src_mod = which.to_numpy(zero_copy_only=False)
                code = np.zeros(len(src_mod), np.int16)
                is_cross = src_mod != j
                if is_cross.any():
                    rel = pc.filter(b.column("relation"), pa.array(is_cross))
                    sm = pc.filter(b.column("src_modality"), pa.array(is_cross))
                    for r in pc.unique(rel).to_pylist():
                        if r not in names:
                            names.append(r)
                    code[is_cross] = pc.index_in(rel, value_set=pa.array(names, pa.string())
                                                 ).to_numpy(zero_copy_only=False)
                    pairs = pa.table({"s": sm, "r": rel}).group_by(["s", "r"]).aggregate([])
                    cross.update((a, r, m) for a, r in zip(pairs.column("s").to_pylist(),
                                                           pairs.column("r").to_pylist(),
                                                           strict=True))
                src = b.column("src").to_numpy(zero_copy_only=False).astype(np.int64)
                dst = b.column("dst").to_numpy(zero_copy_only=False).astype(np.int64)
                yield src + off[src_mod], dst + offsets[m], code


def _theme_matrix(themes: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    col = themes.combine_chunks()
    n = len(col)
    out = np.zeros((n, len(names)), bool)
    if not names or n == 0:
        return out
    flat = pc.list_flatten(col)
    parent = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
    pos = pc.fill_null(pc.index_in(flat, value_set=pa.array(names, pa.string())), -1)
    pos = pos.to_numpy(zero_copy_only=False).astype(np.int64)
    known = pos >= 0
    out[parent[known], pos[known]] = True
    return out


def write_store(graph_root: str, root: str, holdout: float, holdout_seed: int,
                val_fraction: float, val_max: int, hetero: bool,
                min_theme_items: int = 2, edge_batch: int = EDGE_BATCH) -> dict[str, Any]:
    """Write the store (module docstring) under `root`; returns its description
    (cultures, themes, dims, cross-modal relation types, counts) and the held-out
    items as a table (item_id, culture, modality) under the key "held"."""
    os.makedirs(root, exist_ok=True)
    mods = _modalities(graph_root)
    items = {m: gb.read_items(graph_root, m) for m in mods}
    cultures = sorted(set().union(*(pc.unique(t.column("culture")).to_pylist()
                                    for t in items.values())))
    counts: dict[str, int] = {}
    for t in items.values():
        vc = pc.value_counts(pc.list_flatten(t.column("themes").combine_chunks()))
        for row in vc.to_pylist():
            counts[row["values"]] = counts.get(row["values"], 0) + row["counts"]
    themes = sorted(th for th, c in counts.items() if c >= min_theme_items)
    cpos = pa.array(cultures, pa.string())
    splits = item_splits([items[m].column("item_id") for m in mods],
                         [items[m].column("culture") for m in mods],
                         holdout, holdout_seed, val_fraction, val_max)
    offsets, at = {}, 0
    for m in mods:
        offsets[m] = at
        at += items[m].num_rows
    n = at
    culture = np.concatenate([pc.index_in(items[m].column("culture"), value_set=cpos)
                              .to_numpy(zero_copy_only=False).astype(np.int64) for m in mods])
    theme_m = np.concatenate([_theme_matrix(items[m].column("themes"), themes) for m in mods])
    split = np.concatenate(splits)
    np.save(os.path.join(root, "culture.npy"), culture)
    np.save(os.path.join(root, "themes.npy"), theme_m)
    np.save(os.path.join(root, "split.npy"), split)
    # the three graphs over the global node space, streamed from the edge files twice
    names, cross = [SAME], set()
    writers = {which: CSRWriter(root, which, n) for which in ("full", "train", "val")}
    for phase in ("count", "fill"):
        for src, dst, code in edge_batches(graph_root, mods, offsets, names, cross,
                                                edge_batch):
            s_split, d_split = split[src], split[dst]
            same = None if hetero else code == 0  # homo: train / val drop cross-modal edges
            for which, keep in (("full", None),
                                ("train", (s_split == TRAIN) & (d_split == TRAIN)),
                                ("val", (s_split != HELD) & (d_split != HELD))):
                if keep is not None and same is not None:
                    keep &= same
                args = (src, dst, code) if keep is None else (src[keep], dst[keep], code[keep])
                getattr(writers[which], phase)(*args[:2], relations=args[2])
    for w in writers.values():
        w.finish()
    # the reference: culture means of the training items, per head and modality
    train_nodes = split == TRAIN
    for m in mods:
        x = gb.open_x(graph_root, m)
        rows_all = np.arange(offsets[m], offsets[m] + items[m].num_rows)
        c_m = culture[rows_all]
        for h, t in [(GENERAL, None), *((th, j) for j, th in enumerate(themes))]:
            ok = train_nodes[rows_all] if t is None else train_nodes[rows_all] & theme_m[rows_all, t]
            mu, has = culture_means(x, c_m, len(cultures), np.flatnonzero(ok))
            np.save(os.path.join(root, f"means__{h}__{m}.npy"), mu)
            np.save(os.path.join(root, f"has__{h}__{m}.npy"), has)
    sizes = {}  # per modality, the smallest and largest culture among those having it
    for m in mods:
        n_m = np.bincount(culture[offsets[m]:offsets[m] + items[m].num_rows],
                          minlength=len(cultures))
        n_m = n_m[n_m > 0]
        sizes[m] = {"min": int(n_m.min()) if len(n_m) else 0, "max": int(n_m.max(initial=0))}
    meta = {"modalities": mods, "offsets": offsets, "relation_names": names,
            "cultures": cultures, "themes": themes,
            "culture_items": sizes,
            "in_dims": {m: int(gb.open_x(graph_root, m).shape[1]) for m in mods},
            "relations": [list(t) for t in sorted(cross)], "graph_root": graph_root,
            "counts": {"train": int((split == TRAIN).sum()), "val": int((split == VAL).sum()),
                       "held": int((split == HELD).sum())}}
    with open(os.path.join(root, "store.json"), "w") as fh:
        json.dump(meta, fh)
    held = split == HELD
    parts = []
    for m, s in zip(mods, splits, strict=True):
        rows = np.flatnonzero(s == HELD)
        t = items[m].take(pa.array(rows)).select(["item_id", "culture"])
        parts.append(t.append_column("modality", pa.array([m] * len(rows), pa.string())))
    table = pa.concat_tables(parts).sort_by([("modality", "ascending"), ("item_id", "ascending")])
    assert int(held.sum()) == table.num_rows
    return {**meta, "held": table}


def open_store(root: str, which: str = "train") -> ItemStore:
    """The store's `which` graph ("train", "val" or "full") as an ItemStore over
    memory maps; `seedable`: that split's items (all items for "full")."""
    with open(os.path.join(root, "store.json")) as fh:
        meta = json.load(fh)

    def load(name: str) -> np.ndarray:
        return np.load(os.path.join(root, name), mmap_mode="r")

    mods, offsets = meta["modalities"], meta["offsets"]
    culture, themes, split = load("culture.npy"), load("themes.npy"), load("split.npy")
    ends = {m: offsets[m] + int(gb.open_x(meta["graph_root"], m).shape[0]) for m in mods}
    csr = CSRGraph(load(f"{which}_indptr.npy"), load(f"{which}_indices.npy"),
                   load(f"{which}_weights.npy"), load(f"{which}_relations.npy"))
    store = ItemStore(mods, {m: gb.open_x(meta["graph_root"], m) for m in mods},
                      {m: np.asarray(culture[offsets[m]:ends[m]]) for m in mods},
                      {m: themes[offsets[m]:ends[m]] for m in mods}, csr,
                      meta["relation_names"], meta["cultures"], meta["themes"])
    for h in [GENERAL, *meta["themes"]]:
        store.means[h] = {m: load(f"means__{h}__{m}.npy") for m in mods}
        store.has[h] = {m: load(f"has__{h}__{m}.npy") for m in mods}
    code = {"train": TRAIN, "val": VAL}.get(which)
    store.seedable = (np.flatnonzero(np.asarray(split) == code) if code is not None
                      else np.arange(len(split)))
    return store
