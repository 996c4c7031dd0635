"""Embedding tables -> the model's per-modality item graphs (pure; no ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from culturesim_ray.graph.hetero import (
    Relations,
    artifact_links,
    cross_modal_types,
    item_index,
    read_relations,
    split_edges,
)
from culturesim_ray.graph.knn import knn_edges
from culturesim_ray.models.culturesim import ModalityGraph


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
                        s3: Any = None) -> TrainingData:
    """tables: modality -> embeddings (item_id, culture, vector, themes[, artifact_id]).

    Cultures and themes are sorted; a theme needs `min_theme_items` items overall.
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
    themes = sorted(th for th, c in counts.items() if c >= min_theme_items)
    pos = {c: i for i, c in enumerate(cultures)}
    tpos = {th: i for i, th in enumerate(themes)}
    rel = artifact_links(tables, Relations())
    if relations_path:
        read_relations(relations_path, item_index(tables), rel, s3)
    same, incoming = split_edges(rel.edges(), sorted(tables))
    graphs = {}
    for m, t in sorted(tables.items()):
        col = t.column("vector").combine_chunks()
        x = torch.from_numpy(col.flatten().to_numpy(zero_copy_only=False)
                             .reshape(len(col), -1).astype(np.float32))
        culture = torch.tensor([pos[c] for c in t.column("culture").to_pylist()], dtype=torch.long)
        member = torch.zeros(len(col), len(themes), dtype=torch.bool)
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
