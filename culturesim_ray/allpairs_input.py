"""What the all-pairs job reads, and how many neighbours it keeps (pure: no ray).

`resolve_input` says which kind of input a path is: a Parquet file, an embed
run directory (item vectors under embeddings/), a train run or all-pairs
output directory (read as its culture_embeddings.parquet), a run directory as
`culturesim demo --out RUN` leaves it (read as its embed run RUN/embed: raw
item vectors, which every similarity accepts; RUN/train is named in the note),
or a directory of Parquet files. Anything else is an error that names what the
directory holds and what is accepted.

`heads_from_table` turns a read table into per-head culture vectors (and, for
set-level similarities, per-head item sets); `plan_heads` and `resolve_k`
settle the heads that can be compared, their S_total weights, and k.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from culturesim_ray import io
from culturesim_ray.config import AllPairsConfig, S3Config
from culturesim_ray.ops.pooling import GENERAL, pool
from culturesim_ray.ops.set_pairs import item_groups
from culturesim_ray.vectors import as_matrix

CULTURE_FILE = "culture_embeddings.parquet"
COMBINED = "combined"
Heads = dict[str, tuple[list[str], np.ndarray]]
ACCEPTED = ("a Parquet file of items (culture, vector[, themes]) or cultures (culture, head, "
            "vector); an embed run directory (embeddings/); a train run or all-pairs output "
            f"directory ({CULTURE_FILE}); a run directory (embed/, train/); "
            "a directory of Parquet files")


@dataclass(frozen=True)
class Source:
    """path: what to read; kind: file | embed_run | culture_file | parquet_dir;
    what: how to name it in messages; note: a line to log (or "")."""

    path: str
    kind: str
    what: str
    note: str = ""


def _entries(fs: Any, p: str) -> dict[str, bool]:
    """name -> is a directory, for the children of directory p."""
    out = {}
    for e in fs.ls(p, detail=True):
        full = str(e["name"]).rstrip("/")
        if full != p.rstrip("/"):  # some stores list the directory itself
            out[posixpath.basename(full)] = e["type"] == "directory"
    return out


def _shown(entries: dict[str, bool], limit: int = 8) -> str:
    names = sorted(n + "/" if d else n for n, d in entries.items())
    if not names:
        return "nothing (an empty directory)"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")


def resolve_input(inp: str, s3: S3Config | None = None) -> Source:
    """Which all-pairs input `inp` is (see the module docstring)."""
    fs, p = io.filesystem_for(inp, s3)
    if not fs.exists(p):
        raise FileNotFoundError(f"all-pairs input not found: {inp}")
    if not fs.isdir(p):
        return Source(inp, "file", f"the file {inp}")
    entries = _entries(fs, p)
    if entries.get("embeddings"):
        return Source(inp, "embed_run", f"the embed run {inp}")
    if entries.get(CULTURE_FILE) is False:
        what = ("the train run" if "model.pt" in entries else
                "the all-pairs output" if "pairs.parquet" in entries else "the directory")
        return Source(io.join(inp, CULTURE_FILE), "culture_file",
                      f"{what} {inp} ({CULTURE_FILE})")
    if entries.get("embed") or entries.get("train"):
        sub = {d: _entries(fs, p.rstrip("/") + "/" + d) for d in ("embed", "train") if entries.get(d)}
        has_train = sub.get("train", {}).get(CULTURE_FILE) is False
        if sub.get("embed", {}).get("embeddings"):
            embed = io.join(inp, "embed")
            note = (f"all-pairs: {inp} is a run directory: reading its embed run {embed} "
                    "(raw item vectors)")
            if has_train:
                note += f"; pass {io.join(inp, 'train')} for the trained model's culture vectors"
            return Source(embed, "embed_run", f"the embed run {embed}", note)
        if has_train:
            train = io.join(inp, "train")
            return Source(io.join(train, CULTURE_FILE), "culture_file",
                          f"the train run {train} ({CULTURE_FILE})",
                          f"all-pairs: {inp} is a run directory without an embed run: "
                          f"reading {io.join(train, CULTURE_FILE)}")
    files = [f for f in fs.find(p) if not posixpath.basename(f).startswith((".", "_"))]
    if files and all(f.endswith(".parquet") for f in files):
        return Source(inp, "parquet_dir", f"the Parquet files in {inp}")
    raise ValueError(f"{inp}: not an all-pairs input; it holds {_shown(entries)}. "
                     f"Accepted: {ACCEPTED}")


def item_vectors(table: pa.Table, what: str, row_offset: int = 0) -> np.ndarray:
    """(n, d) float32 from the table's `vector` column; mixed dimensions, NaN or inf
    are errors naming the row (counted from `row_offset`: the table is a chunk of a
    file) and its item_id or culture."""
    vecs = as_matrix(table.column("vector"), what, row_offset, writable=True)
    bad_rows = ~np.isfinite(vecs).all(axis=1)
    if bad_rows.any():
        row = int(np.flatnonzero(bad_rows)[0])
        key = "item_id" if "item_id" in table.column_names else "culture"
        raise ValueError(f"{what}: row {row + row_offset} ({table.column(key)[row].as_py()}) holds NaN or inf "
                         f"({int(bad_rows.sum())} such rows)")
    return vecs


def culture_heads(heads: list[str], cultures: list[str], vecs: np.ndarray,
                  what: str) -> dict[str, tuple[list[str], np.ndarray]]:
    """Culture-level rows -> head -> (cultures sorted, (N, d) vectors)."""
    groups: dict[str, list[int]] = {}
    for i, h in enumerate(heads):
        groups.setdefault(h, []).append(i)
    out = {}
    for h, rows in groups.items():
        cs = [cultures[i] for i in rows]
        if len(set(cs)) != len(cs):
            raise ValueError(f"{what}: head {h!r} lists a culture twice")
        order = np.argsort(cs, kind="stable")
        out[h] = ([cs[i] for i in order], vecs[np.asarray(rows)[order]])
    return out


def heads_from_table(table: pa.Table, src: Source, cfg: AllPairsConfig, what: str
                     ) -> tuple[Heads, dict[str, Any] | None, np.ndarray]:
    """(head -> (cultures, vectors), head -> `item_groups` entry or None, item vectors).

    Item-level input is pooled per culture (`ops.pooling.pool`); culture-level
    input (a head column) is taken as it is, and is an error for a set-level
    similarity, which needs the items."""
    cultures = table.column("culture").to_pylist()
    if "head" in table.column_names:  # culture level already
        if cfg.set_level:
            raise ValueError(
                f"{what}: {cfg.similarity!r} is a set-level similarity (it compares the item "
                f"sets of cultures), but {src.what} is culture-level input (a head column: one "
                f"vector per culture and head). Pass item-level input: an embed run directory "
                f"or a Parquet of items (culture, vector[, themes]), e.g. the embed run the "
                f"model was trained on; or choose a vector similarity (cosine, ...)")
        # heads may differ in dimension (the model's general head carries its raw
        # residual): each head's vectors are read and checked on their own
        heads_col = table.column("head").to_pylist()
        out: Heads = {}
        for h in sorted(set(heads_col)):
            rows = [i for i, x in enumerate(heads_col) if x == h]
            part = table.take(pa.array(rows, pa.int64()))
            out.update(culture_heads([h] * len(rows), [cultures[i] for i in rows],
                                     item_vectors(part, f"{what} (head {h!r})"), what))
        return out, None, np.zeros((0, 0), np.float32)
    vecs = item_vectors(table, what)
    themes = table.column("themes").to_pylist() if "themes" in table.column_names else None
    heads = pool(vecs, cultures, themes, how=cfg.pooling, min_items=cfg.min_items)
    groups = item_groups(cultures, themes, cfg.min_items) if cfg.set_level else None
    return heads, groups, vecs


@dataclass(frozen=True)
class HeadPlan:
    """heads: those compared; skipped: head -> why not; alpha: theme -> weight of S_total."""

    heads: Heads
    skipped: dict[str, str]
    alpha: dict[str, float]


def plan_heads(heads: Heads, cfg: AllPairsConfig, what: str) -> HeadPlan:
    """Keep cfg.heads (default all), skip heads with fewer than 2 cultures, weigh the
    remaining themes: cfg.alpha (which may name any input theme) or equal weights."""
    if cfg.heads:
        missing = sorted(set(cfg.heads) - set(heads))
        if missing:
            raise ValueError(f"heads {missing} not in the input; it has {sorted(heads)}")
        heads = {h: heads[h] for h in cfg.heads}
    known = [h for h in heads if h not in (GENERAL, COMBINED)]
    if cfg.alpha:
        unknown = sorted(set(cfg.alpha) - set(known))
        if unknown:
            raise ValueError(f"alpha names unknown themes {unknown}; themes here: {known}")
    kept, skipped = drop_small_heads({h: cs for h, (cs, _) in heads.items()})
    if not kept:
        raise ValueError(f"{what}: no head has at least 2 cultures to compare "
                         f"({'; '.join(f'{h}: {w}' for h, w in skipped.items())})")
    themes = [t for t in known if t in kept]
    if cfg.alpha:
        alpha = {t: float(cfg.alpha.get(t, 0.0)) for t in themes}
    else:
        alpha = {t: 1.0 / len(themes) for t in themes}
    return HeadPlan({h: heads[h] for h in kept}, skipped, alpha)


def drop_small_heads(sizes: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """(heads with at least 2 cultures, head -> why it is skipped) from head -> cultures."""
    kept, skipped = [], {}
    for h, cs in sizes.items():
        if len(cs) >= 2:
            kept.append(h)
        else:
            skipped[h] = (f"{len(cs)} culture(s) ({', '.join(cs) or 'none'}); "
                          "all-pairs needs at least 2")
    return kept, skipped


def resolve_k(k: int | None, largest: int, default: int) -> tuple[int, str]:
    """(k to use, a note when the default was clamped). k None means `default`, clamped
    to largest - 1; an explicit k above largest - 1 is an error."""
    if k is None:
        used = min(default, largest - 1)
        note = f"all-pairs: k={default} clamped to {used} ({largest} cultures)" \
            if used < default else ""
        return used, note
    if k > largest - 1:
        raise ValueError(f"k={k} but the input has only {largest} cultures: "
                         f"k must be at most {largest - 1}")
    return k, ""
