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
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    """Edges by type as (E, 2) int64 blocks of (source row, destination row) pairs,
    and the relations-file rows set aside."""

    arrays: dict[EdgeType, list[np.ndarray]] = field(default_factory=dict)
    quarantined: list[dict[str, Any]] = field(default_factory=list)

    def add_array(self, edge_type: EdgeType, pairs: np.ndarray) -> None:
        """(E, 2) (source row, destination row) pairs of one edge type, as given
        (the caller adds the reverse edges)."""
        self.arrays.setdefault(edge_type, []).append(np.asarray(pairs, np.int64).reshape(-1, 2))

    def add_both_ways(self, edge_type: EdgeType, pairs: np.ndarray) -> None:
        """A symmetric relation's pairs: each edge and its reverse."""
        pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
        src, relation, dst = edge_type
        self.add_array(edge_type, pairs)
        self.add_array((dst, relation, src), pairs[:, ::-1])

    def edge_types(self) -> list[EdgeType]:
        return sorted(self.arrays)

    def pair_arrays(self) -> dict[EdgeType, np.ndarray]:
        """Edge type -> (E, 2) int64 of every pair added (duplicates kept), sorted by type."""
        return {et: np.concatenate(self.arrays[et]) for et in self.edge_types()}

    def edges(self) -> dict[EdgeType, Tensor]:
        """Edge type -> (2, E) long, duplicates removed, sorted."""
        return {et: torch.unique(torch.from_numpy(p).T, dim=1)
                for et, p in self.pair_arrays().items()}


def item_index(tables: dict[str, pa.Table], ids: Iterable[str] | None = None
               ) -> dict[str, tuple[str, int]]:
    """item_id -> (modality, row in that modality's table); ids: only these (the ids a
    relations file names: a lookup as large as the file, not the corpus, found by
    Arrow's hash lookup). An id in several rows maps to the last (modalities sorted)."""
    mods = sorted(tables)
    if ids is None:
        index: dict[str, tuple[str, int]] = {}
        for m in mods:
            for i, item in enumerate(tables[m].column("item_id").to_pylist()):
                index[item] = (m, i)
        return index
    wanted = sorted({i for i in ids if isinstance(i, str)})
    if not wanted:
        return {}
    found: dict[str, tuple[str, int]] = {}
    for m in mods:  # later modalities overwrite, as above
        col = tables[m].column("item_id")
        at = pc.index_in(pa.array(wanted, pa.string()),
                         value_set=pc.cast(col, pa.string()).combine_chunks()[::-1])
        rows = pc.fill_null(at, -1).to_numpy(zero_copy_only=False)  # -1: not found
        for w, r in zip(wanted, rows.tolist(), strict=True):
            if r >= 0:
                found[w] = (m, len(col) - 1 - r)
    return found


def artifact_pairs(tables: dict[str, pa.Table]) -> dict[EdgeType, np.ndarray]:
    """(m_a, "artifact", m_b) -> (E, 2) int64 rows: every ordered pair of two items
    that share a non-empty artifact_id (both directions), by one sort of the
    dictionary-encoded ids; no Python loop over items."""
    mods = sorted(m for m, t in tables.items() if "artifact_id" in t.column_names)
    arts, mod_of, row_of = [], [], []
    for j, m in enumerate(mods):
        col = pc.cast(tables[m].column("artifact_id"), pa.string()).combine_chunks()
        ok = pc.fill_null(pc.not_equal(col, ""), False)
        rows = np.flatnonzero(ok.to_numpy(zero_copy_only=False))
        arts.append(col.filter(ok))
        mod_of.append(np.full(len(rows), j, np.int64))
        row_of.append(rows.astype(np.int64))
    if not mods or not sum(len(r) for r in row_of):
        return {}
    codes = pc.dictionary_encode(pa.concat_arrays(arts)).indices.to_numpy(zero_copy_only=False)
    mod, row = np.concatenate(mod_of), np.concatenate(row_of)
    order = np.argsort(codes, kind="stable")
    c = codes[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    size = np.diff(np.r_[starts, len(c)])
    z = np.repeat(size, size)  # group size of each (sorted) member
    first = np.repeat(starts, size)  # its group's first position
    src = np.repeat(np.arange(len(c)), z)
    dst = np.repeat(first, z) + (np.arange(int(z.sum())) - np.repeat(np.cumsum(z) - z, z))
    keep = src != dst
    s, d = order[src[keep]], order[dst[keep]]
    out = {}
    for a, ma in enumerate(mods):
        for b, mb in enumerate(mods):
            sel = (mod[s] == a) & (mod[d] == b)
            if sel.any():
                out[(ma, ARTIFACT_RELATION, mb)] = np.stack([row[s[sel]], row[d[sel]]], axis=1)
    return out


def artifact_links(tables: dict[str, pa.Table], into: Relations | None = None) -> Relations:
    """Items that share an artifact_id, as "artifact" edges (within a modality they
    join that modality's own graph, see `split_edges`)."""
    rel = into if into is not None else Relations()
    for et, pairs in artifact_pairs(tables).items():
        rel.add_array(et, pairs)
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


def relation_rows(path: str, s3: Any = None) -> Iterator[dict[str, Any]]:
    """The rows of the relations file at `path`, streamed (one chunk of the file in
    memory); RelationsError when it cannot be read."""
    try:
        yield from tables.iter_corpus_rows(path, s3, RELATION_FIELDS)
    except (tables.CorpusFormatError, FileNotFoundError) as exc:
        raise RelationsError(f"relations file {path}: {exc}") from exc


def named_items(path: str, s3: Any = None) -> set[str]:
    """Every item id the relations file names (integer ids as the corpus reads them),
    in one streamed pass; RelationsError when no row has a src_item or a dst_item."""
    named: set[str] = set()
    seen: set[str] = set()
    empty = True
    for row in relation_rows(path, s3):
        empty = False
        for name in ("src_item", "dst_item"):
            if name in row:
                seen.add(name)
                value = id_text(row[name])
                if isinstance(value, str):
                    named.add(value)
    missing = [c for c in ("src_item", "dst_item") if c not in seen]
    if missing and not empty:
        raise RelationsError(f"relations file {path}: no {' / '.join(missing)} column "
                             f"(columns: src_item, dst_item, optional relation)")
    return named


def add_relations(rows: Iterable[dict[str, Any]], items: dict[str, tuple[str, int]],
                  into: Relations | None = None) -> Relations:
    """The rows of a relations file as edges over `items` (`item_index`), consumed as
    they come (each edge kept as two int64 rows); a bad row is quarantined with its
    reason."""
    rel = into if into is not None else Relations()
    found: dict[EdgeType, tuple[array, array]] = {}
    for given in rows:
        row = {**given, "src_item": id_text(given.get("src_item")),
               "dst_item": id_text(given.get("dst_item"))}  # integer ids as the corpus reads them
        reason = _check_row(row, items)
        if reason:  # the row as given
            rel.quarantined.append({"source_row": given.get("_source_row"), "reason": reason,
                                    "row": {k: v for k, v in given.items() if k != "_source_row"}})
            continue
        (src_m, src_row), (dst_m, dst_row) = items[row["src_item"]], items[row["dst_item"]]
        et = (src_m, row.get("relation") or DEFAULT_RELATION, dst_m)
        src, dst = found.setdefault(et, (array("q"), array("q")))
        src.append(src_row)
        dst.append(dst_row)
    for et, (src, dst) in found.items():
        rel.add_both_ways(et, np.stack([np.frombuffer(src, np.int64),
                                        np.frombuffer(dst, np.int64)], axis=1))
    return rel


def read_relations(path: str, items: dict[str, tuple[str, int]] | dict[str, pa.Table],
                   into: Relations | None = None, s3: Any = None) -> Relations:
    """The relations file at `path` as edges, read twice, streamed: once for the ids
    it names and its columns, once for its edges. Memory follows the edges and the
    distinct ids named, not the file's rows. items: `item_index(tables)`, or the
    tables themselves (modality -> item_id column), looked up for the ids the file
    names only."""
    named = named_items(path, s3)
    if items and all(isinstance(v, pa.Table) for v in items.values()):
        items = item_index(items, named)
    return add_relations(relation_rows(path, s3), items, into)


def cross_modal_types(relations: Relations) -> list[list[str]]:
    """The edge types between different modalities, as a model config lists them."""
    return [list(et) for et in relations.edge_types()
            if et[0] != et[2]]


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
