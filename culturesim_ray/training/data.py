"""Embedding tables -> the model's per-modality item graphs (pure; no ray)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from culturesim_ray.graph.hetero import (
    Relations,
    artifact_links,
    cross_modal_types,
    read_relations,
    split_edges,
)
from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import ModalityGraph
from culturesim_ray.vectors import as_matrix


@dataclass
class TrainingData:
    graphs: dict[str, ModalityGraph]
    cultures: list[str]
    themes: list[str]
    relations: list[list[str]] = field(default_factory=list)  # cross-modal edge types
    quarantined_relations: list[dict] = field(default_factory=list)

    @property
    def in_dims(self) -> dict[str, int]:
        return {m: int(g.x.shape[1]) for m, g in self.graphs.items()}


def build_training_data(tables: dict[str, pa.Table], k: int = 10,
                        min_theme_items: int = 2, relations_path: str | None = None,
                        s3: Any = None, themes: list[str] | None = None) -> TrainingData:
    """tables: modality -> embeddings (item_id, culture, vector, themes[, artifact_id]).

    Cultures and themes are sorted; a theme needs `min_theme_items` items overall
    (unless `themes` names them).
    Each modality's graph: kNN + shared artifact_id + same-modality relations of
    the optional relations file; cross-modal links (artifact_id, relations) go to
    `ModalityGraph.incoming` for the hetero variant (`graph.hetero`)."""
    if not tables:
        raise ValueError("no embeddings to train on")
    cultures = sorted({c for t in tables.values() for c in t.column("culture").to_pylist()})
    counts: dict[str, int] = {}
    for t in tables.values():
        if "themes" in t.column_names:
            for ths in t.column("themes").to_pylist():
                for th in ths or []:
                    counts[th] = counts.get(th, 0) + 1
    if themes is None:  # given: the theme heads of a model trained on other items
        themes = sorted(th for th, c in counts.items() if c >= min_theme_items)
    pos = {c: i for i, c in enumerate(cultures)}
    tpos = {th: i for i, th in enumerate(themes)}
    rel = artifact_links(tables, Relations())
    if relations_path:
        read_relations(relations_path, tables, rel, s3)
    same, incoming = split_edges(rel.edges(), sorted(tables))
    graphs = {}
    for m, t in sorted(tables.items()):
        x = torch.from_numpy(as_matrix(t.column("vector"), f"{m} embeddings", writable=True))
        culture = torch.tensor([pos[c] for c in t.column("culture").to_pylist()], dtype=torch.long)
        member = torch.zeros(len(x), len(themes), dtype=torch.bool)
        if "themes" in t.column_names:
            for i, ths in enumerate(t.column("themes").to_pylist()):
                for th in ths or []:
                    if th in tpos:
                        member[i, tpos[th]] = True
        ei, _ = knn_edges(x, k)
        if same[m]:  # shared artifact_id, relations file
            ei = torch.unique(torch.cat([ei, *same[m]], dim=1), dim=1)
        graphs[m] = ModalityGraph(x, ei, culture, member, incoming[m])
    return TrainingData(graphs, cultures, themes, cross_modal_types(rel), rel.quarantined)


Strings = Sequence[str] | pa.Array | pa.ChunkedArray


def as_strings(values: Strings) -> pa.Array:
    """Strings as one Arrow array (a list converted, chunks combined)."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(list(values), pa.string())


def id_keys(item_ids: Strings, seed: int, chunk: int = 1 << 18) -> np.ndarray:
    """(n,) uint64 keyed hashes (blake2b of `seed:item_id`), a chunk of ids at a time."""
    ids = as_strings(item_ids)
    keys = np.empty(len(ids), np.uint64)
    for a in range(0, len(ids), chunk):
        part = ids.slice(a, chunk).to_pylist()
        keys[a:a + len(part)] = np.fromiter(
            (int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(),
                            "big") for i in part), np.uint64, count=len(part))
    return keys


def holdout_mask(item_ids: Strings, cultures: Strings, fraction: float,
                 seed: int = 0) -> np.ndarray:
    """(n,) bool: the items held out of training, `fraction` of each culture's items
    (rounded down, so a culture keeps at least one training item, and a culture with
    one item keeps it). Which items: the lowest keyed hashes of `seed:item_id` (ties:
    the smaller id), so the split depends only on the ids, the seed and the fraction,
    not on row order. Lists or Arrow string arrays; no Python loop but the hashing."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    ids = as_strings(item_ids)
    n = len(ids)
    held = np.zeros(n, dtype=bool)
    if fraction == 0.0 or n == 0:
        return held
    keys = id_keys(ids, seed)
    codes = pc.dictionary_encode(as_strings(cultures)).indices.to_numpy(zero_copy_only=False)
    order = np.lexsort((keys, codes))
    k, c = keys[order], codes[order]
    if ((k[1:] == k[:-1]) & (c[1:] == c[:-1])).any():  # equal hashes: the smaller id first
        rank = np.empty(n, np.int64)
        rank[pc.sort_indices(ids).to_numpy()] = np.arange(n)
        order = np.lexsort((rank, keys, codes))
        c = codes[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    size = np.diff(np.r_[starts, n])
    within = np.arange(n) - np.repeat(starts, size)
    take = (fraction * size).astype(np.int64)  # rounded down
    held[order[within < np.repeat(take, size)]] = True
    return held


def split_holdout(tables: dict[str, pa.Table], fraction: float, seed: int = 0
                  ) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    """(training tables, held-out tables) per modality by `holdout_mask`."""
    train, held = {}, {}
    for m, t in tables.items():
        mask = holdout_mask(t.column("item_id"), t.column("culture"), fraction, seed)
        train[m] = t.filter(pa.array(~mask))
        held[m] = t.filter(pa.array(mask))
    return train, held


def held_out_ids(held: dict[str, pa.Table]) -> pa.Table:
    """item_id, modality, culture of the held-out items (sorted by modality, id)."""
    parts = [pa.table({"item_id": t.column("item_id"), "culture": t.column("culture"),
                       "modality": pa.array([m] * t.num_rows, pa.string())})
             for m, t in sorted(held.items())]
    if not parts:
        return pa.table({"item_id": pa.array([], pa.string()), "culture": pa.array([], pa.string()),
                         "modality": pa.array([], pa.string())})
    out = pa.concat_tables(parts)
    return out.sort_by([("modality", "ascending"), ("item_id", "ascending")])


def drop_items(tables: dict[str, pa.Table], ids: set[str]) -> dict[str, pa.Table]:
    """The tables without the rows whose item_id is in `ids`."""
    value_set = pa.array(sorted(ids), pa.string())
    return {m: t.filter(pc.invert(pc.is_in(t.column("item_id"), value_set=value_set)))
            for m, t in tables.items()}
