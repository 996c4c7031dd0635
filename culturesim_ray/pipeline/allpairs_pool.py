"""Per-culture pooling of item vectors as a distributed aggregation (Ray Data).

Each read task streams one Parquet file of items in row groups and emits the
partial pools of its rows (`ops.pooling.partial_pool`: per head and culture the
sum of the normalised vectors and the count; for median the normalised items
themselves, so the median is exact per culture); a hash shuffle on (head,
culture) brings each key's partials together, and `finish_pool` combines them.
The driver receives the pooled culture vectors only: its memory grows with the
number of cultures, not of items.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray import io
from culturesim_ray.allpairs_input import Heads, Source, culture_heads, item_vectors
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.ops.pooling import GENERAL, finish_pool, partial_pool
from culturesim_ray.vectors import as_matrix

PARTITION_BYTES = 64 << 20


def _files(src: Source, cfg: AllPairsConfig) -> list[str]:
    """The Parquet files of item vectors the source holds."""
    path = EmbedLayout(src.path).embeddings(cfg.modality) if src.kind == "embed_run" else src.path
    fs, p = io.filesystem_for(path, cfg.s3)
    fs.invalidate_cache()
    if src.kind == "embed_run" and not fs.exists(p):
        raise ValueError(f"{src.path}: no {cfg.modality!r} embeddings in this run "
                         f"(choose another modality)")
    if fs.isdir(p):
        files = sorted(f for f in fs.find(p) if f.endswith(".parquet"))
        prefix = "s3://" if io.is_s3(path) else ""
        files = [prefix + f for f in files]
    else:
        files = [path]
    if src.kind == "embed_run" and not files:
        raise ValueError(f"{src.path}: no {cfg.modality!r} embeddings in this run "
                         f"(choose another modality)")
    return files


def _schema(file: str, cfg: AllPairsConfig, what: str) -> pa.Schema:
    fs, p = io.filesystem_for(file, cfg.s3)
    try:
        with fs.open(p, "rb") as fh:
            return pq.read_schema(fh)
    except pa.ArrowInvalid as exc:
        from culturesim_ray.allpairs_input import ACCEPTED

        raise ValueError(f"{what}: not a Parquet file ({exc}); accepted: {ACCEPTED}") from exc


def is_culture_level(src: Source, cfg: AllPairsConfig) -> bool:
    """True when the input holds culture vectors (a head column), read on the driver."""
    if src.kind == "culture_file":
        return True
    if src.kind == "embed_run":
        return False
    files = _files(src, cfg)
    return bool(files) and "head" in _schema(files[0], cfg, src.path).names


def pooled_heads(src: Source, cfg: AllPairsConfig, what: str) -> Heads:
    """head -> (cultures sorted, (C, d) float32) pooled from the source's items."""
    import ray

    files = _files(src, cfg)
    names = set(_schema(files[0], cfg, what).names) if files else set()
    if not {"culture", "vector"} <= names:
        raise ValueError(f"{what}: expected columns culture and vector (and themes or head), "
                         f"got {sorted(names)}")
    columns = [c for c in ("item_id", "culture", "vector", "themes", "error") if c in names]
    s3, how, single = cfg.s3, cfg.pooling, len(files) == 1

    def read(batch: dict[str, Any]) -> Any:
        for file in batch["file"]:
            fs, p = io.filesystem_for(str(file), s3)
            shown = what if single else str(file)
            offset = 0
            with fs.open(p, "rb") as fh:
                for rb in pq.ParquetFile(fh).iter_batches(batch_size=16_384, columns=columns):
                    t = pa.Table.from_batches([rb])
                    if "error" in t.column_names:  # an embed run's failed rows carry no vector
                        t = t.filter(pa.compute.is_null(t.column("error")))
                    if t.num_rows:
                        vecs = item_vectors(t, shown, row_offset=offset)
                        themes = t.column("themes").to_pylist() if "themes" in columns else None
                        part = partial_pool(vecs, t.column("culture").to_pylist(), themes, how)
                        yield _partial_table(part)
                    offset += rb.num_rows

    def finish(t: pa.Table) -> pa.Table:
        out = finish_pool(t.column("head").to_pylist(), t.column("culture").to_pylist(),
                          t.column("n").to_numpy(), as_matrix(t.column("vector")), how,
                          cfg.min_items)
        return _partial_table(out, pa.float32())

    size = sum(_size(f, cfg) for f in files)
    partitions = max(1, min(64, math.ceil(size / PARTITION_BYTES)))
    ds = (ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files))
          .map_batches(read, batch_size=1, batch_format="numpy")
          .repartition(partitions, keys=["head", "culture"])
          .map_batches(finish, batch_size=None, batch_format="pyarrow"))
    tables = [b for b in ds.iter_batches(batch_size=None, batch_format="pyarrow") if b.num_rows]
    if not tables:
        raise ValueError(f"{what}: no vectors (empty input)")
    table = pa.concat_tables(tables)
    heads_col = table.column("head").to_pylist()
    vecs = item_vectors(table, what)
    out = culture_heads(heads_col, table.column("culture").to_pylist(), vecs, what)
    return {h: out[h] for h in sorted(out, key=lambda h: (h != GENERAL, h))}


def _partial_table(part: dict[str, Any], dtype: pa.DataType | None = None) -> pa.Table:
    v = np.asarray(part["vector"])
    flat = pa.array(v.reshape(-1), dtype or pa.float64())
    return pa.table({"head": pa.array(part["head"], pa.string()),
                     "culture": pa.array(part["culture"], pa.string()),
                     "n": pa.array(part["n"], pa.int64()),
                     "vector": pa.FixedSizeListArray.from_arrays(flat, v.shape[1])})


def _size(file: str, cfg: AllPairsConfig) -> int:
    fs, p = io.filesystem_for(file, cfg.s3)
    return int(fs.size(p) or 0)
