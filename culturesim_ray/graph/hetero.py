"""Explicit relations between items, within and across modalities (SPEC M3).

The heterogeneous graph has one node type per modality and edge types
(source modality, relation, destination modality):
- (m, "similar", m): the modality's own item graph (kNN plus the
  same-modality pairs below), the one the homogeneous branches use;
- (a, "artifact", b), a != b: items of different modalities sharing an artifact_id;
- (a, REL, b): pairs from an optional relations file.

Relations file: CSV, JSONL or Parquet (local or s3://) with `src_item`,
`dst_item` (item ids of the embeddings) and an optional `relation` (lower-case
name, default "related"). A relation is symmetric: each pair becomes an edge
both ways. A row naming an unknown item, linking an item to itself or giving a
bad relation name is quarantined with its reason, never dropped silently.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import torch
from torch import Tensor

from culturesim_ray import tables
from culturesim_ray.models.branch import SELF_RELATION
from culturesim_ray.schema import id_text

RELATION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
DEFAULT_RELATION = "related"
ARTIFACT_RELATION = "artifact"

EdgeType = tuple[str, str, str]


class RelationsError(ValueError):
    """The relations file as a whole cannot be used (unreadable, columns missing)."""


@dataclass
class Relations:
    """Edges by type, (source row, destination row) pairs, and the rows set aside."""

    pairs: dict[EdgeType, list[tuple[int, int]]] = field(default_factory=dict)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def add(self, src: tuple[str, int], dst: tuple[str, int], relation: str) -> None:
        """A symmetric relation: the edge both ways."""
        self.pairs.setdefault((src[0], relation, dst[0]), []).append((src[1], dst[1]))
        self.pairs.setdefault((dst[0], relation, src[0]), []).append((dst[1], src[1]))

    def edges(self) -> dict[EdgeType, Tensor]:
        """Edge type -> (2, E) long, duplicates removed, sorted."""
        return {et: torch.unique(torch.tensor(p, dtype=torch.long).T, dim=1)
                for et, p in sorted(self.pairs.items())}


def item_index(tables: dict[str, pa.Table]) -> dict[str, tuple[str, int]]:
    """item_id -> (modality, row in that modality's table)."""
    index: dict[str, tuple[str, int]] = {}
    for m, t in sorted(tables.items()):
        for i, item in enumerate(t.column("item_id").to_pylist()):
            index[item] = (m, i)
    return index


def artifact_links(tables: dict[str, pa.Table], into: Relations | None = None) -> Relations:
    """Items that share an artifact_id, as "artifact" edges (within a modality they
    join that modality's own graph, see `split_edges`)."""
    rel = into if into is not None else Relations()
    groups: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for m, t in sorted(tables.items()):
        if "artifact_id" in t.column_names:
            for i, a in enumerate(t.column("artifact_id").to_pylist()):
                if a:
                    groups[a].append((m, i))
    for members in groups.values():
        for x, a in enumerate(members):
            for b in members[x + 1:]:
                rel.add(a, b, ARTIFACT_RELATION)
    return rel


def _check_row(row: dict[str, Any], items: dict[str, tuple[str, int]]) -> str | None:
    for name in ("src_item", "dst_item"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"{name}: missing or not a string ({value!r})"
        if value not in items:
            return f"{name}: {value!r} is not an item of the embeddings"
    if row["src_item"] == row["dst_item"]:
        return f"src_item and dst_item are the same item ({row['src_item']!r})"
    relation = row.get("relation") or DEFAULT_RELATION
    if not isinstance(relation, str) or not RELATION_NAME.match(relation):
        return f"relation: {relation!r} is not a lower-case name (letters, digits, _)"
    if relation == SELF_RELATION:
        return f"relation: {SELF_RELATION!r} is reserved for the kNN item graph"
    return None


RELATION_FIELDS = frozenset({"src_item", "dst_item", "relation"})


def read_relations(path: str, items: dict[str, tuple[str, int]],
                   into: Relations | None = None, s3: Any = None) -> Relations:
    """The relations file at `path` over the items of `item_index(tables)`."""
    try:
        rows = tables.read_corpus_rows(path, s3, RELATION_FIELDS)
    except (tables.CorpusFormatError, FileNotFoundError) as exc:
        raise RelationsError(f"relations file {path}: {exc}") from exc
    if rows:
        missing = [c for c in ("src_item", "dst_item") if all(c not in r for r in rows)]
        if missing:
            raise RelationsError(f"relations file {path}: no {' / '.join(missing)} column "
                                 f"(columns: src_item, dst_item, optional relation)")
    rel = into if into is not None else Relations()
    for given in rows:
        row = {**given, "src_item": id_text(given.get("src_item")),
               "dst_item": id_text(given.get("dst_item"))}  # integer ids as the corpus reads them
        reason = _check_row(row, items)
        if reason:  # the row as given
            rel.quarantined.append({"source_row": given.get("_source_row"), "reason": reason,
                                    "row": {k: v for k, v in given.items() if k != "_source_row"}})
            continue
        rel.add(items[row["src_item"]], items[row["dst_item"]],
                row.get("relation") or DEFAULT_RELATION)
    return rel


def cross_modal_types(relations: Relations) -> list[list[str]]:
    """The edge types between different modalities, as a model config lists them."""
    return [list(et) for et in sorted(relations.pairs) if et[0] != et[2]]


def split_edges(edges: dict[EdgeType, Tensor], modalities: Sequence[str]
                ) -> tuple[dict[str, list[Tensor]], dict[str, dict[tuple[str, str], Tensor]]]:
    """Same-modality edges (to merge into each modality's own graph) and, per
    destination modality, the incoming cross-modal ones by (source, relation)."""
    same: dict[str, list[Tensor]] = {m: [] for m in modalities}
    incoming: dict[str, dict[tuple[str, str], Tensor]] = {m: {} for m in modalities}
    for (src, rel, dst), ei in edges.items():
        if src == dst:
            same[dst].append(ei)
        else:
            incoming[dst][(src, rel)] = ei
    return same, incoming
