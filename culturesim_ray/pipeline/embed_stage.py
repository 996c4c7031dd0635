"""The embed job's staging (Ray glue): a hash shuffle of Ray tasks that reads,
validates and resolves every corpus row (duplicates, resume) into P partitions
held in the object store, and the small tasks mapped over those partitions
(counts, the quarantine, --strict checks). The row logic is `culturesim_ray.ingest`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from culturesim_ray import ingest, io, tables
from culturesim_ray.config import EmbedConfig
from culturesim_ray.layout import EmbedLayout
from culturesim_ray.schema import MODALITIES, StrictModeError
from culturesim_ray.uris import UriRoots

PARTITION_BYTES = 64 << 20  # corpus bytes per hash partition of the duplicate/resume shuffle




def _parquet_files(fs: Any, p: str) -> list[str]:
    fs.invalidate_cache()
    if not fs.exists(p):
        return []
    return sorted(f for f in fs.find(p) if f.endswith(".parquet"))


def _complete_files(out: str, modality: str, cfg: EmbedConfig) -> list[str]:
    """The complete Parquet files written for `modality`; a file without a valid
    footer (a write cut short, from runs before writes were atomic) is deleted so
    its rows are embedded again, and so is a killed writer's hidden temp file."""
    fs, p = io.filesystem_for(EmbedLayout(out).embeddings(modality), cfg.s3)
    if not io.is_s3(out) and fs.exists(p):
        for f in fs.find(p):
            if f.rsplit("/", 1)[-1].startswith(".") and f.endswith(".tmp"):
                fs.rm(f)
    files = []
    for f in _parquet_files(fs, p):
        try:
            with fs.open(f, "rb") as fh:
                pq.read_metadata(fh)
            files.append(f)
        except (pa.ArrowInvalid, OSError):
            fs.rm(f)
    return files


def _read_file(file: str, index: int, roots: UriRoots, s3: Any, chunk: int, parts: int) -> Any:
    """Ray task (streaming): one corpus file, chunk by chunk, each chunk validated
    and split into `parts` by item_id (exactly `parts` objects per chunk)."""
    pos = 0
    for rows in tables.iter_corpus_file(file, s3, chunk):
        # not `yield from`: Ray drives the generator with send(), which a list iterator lacks
        for part in ingest.split_by_key(ingest.read_validated(rows, index, pos, roots), parts):  # noqa: UP028
            yield part
        pos += len(rows)


def _read_written(file: str, s3: Any, parts: int) -> Any:
    """Ray task: the ids one written embeddings file holds, split into `parts`."""
    fs, p = io.filesystem_for(file, s3)
    with fs.open(p, "rb") as fh:
        t = pq.read_table(fh, columns=["item_id", "modality", "error"])
    rows = ingest.written_rows(t.column("item_id"), t.column("modality"), t.column("error"))
    parts_out = ingest.split_by_key(rows, parts)
    return parts_out if parts > 1 else parts_out[0]


def _resolve(*parts: pa.Table) -> pa.Table:
    """Ray task: one partition's rows from every reader, resolved."""
    parts = tuple(t for t in parts if t.num_rows)
    if not parts:
        return ingest.STAGED_SCHEMA.empty_table()
    return ingest.resolve_partition(pa.concat_tables(parts))


def _stage(files: list[str], roots: UriRoots, layout: EmbedLayout, cfg: EmbedConfig) -> list[Any]:
    """Read, validate and resolve every row (duplicates, resume) as a hash shuffle
    of Ray tasks: readers stream each file in chunks and split every chunk by
    item_id into P parts; P resolve tasks each take one part from every chunk (and
    from the ids already written). Returns the P resolved partitions' object refs:
    the rows stay in the object store, the driver holds references only."""
    import ray

    size = sum(_file_size(f, cfg) for f in files)
    written_files = [f for m in MODALITIES for f in _complete_files(layout.root, m, cfg)]
    size += 64 * len(written_files) * cfg.rows_per_file
    parts = max(2, math.ceil(3 * size / PARTITION_BYTES))
    reader = ray.remote(num_returns="streaming", num_cpus=0.5)(_read_file)
    gens = [reader.remote(f, i, roots, cfg.s3, cfg.read_chunk_rows, parts)
            for i, f in enumerate(files)]
    by_part: list[list[Any]] = [[] for _ in range(parts)]
    for gen in gens:
        for j, ref in enumerate(gen):
            by_part[j % parts].append(ref)
    if written_files:
        prefix = "s3://" if io.is_s3(layout.root) else ""
        scan = ray.remote(num_returns=parts, num_cpus=0.5)(_read_written)
        for f in written_files:
            refs = scan.remote(prefix + f, cfg.s3, parts)
            for j, ref in enumerate(refs if parts > 1 else [refs]):
                by_part[j].append(ref)
    resolve = ray.remote(num_cpus=0.5)(_resolve)
    staged = [resolve.remote(*refs) for refs in by_part]
    ray.wait(staged, num_returns=len(staged), fetch_local=False)
    return staged


def stage_counted(files: list[str], roots: UriRoots, layout: EmbedLayout,
                  cfg: EmbedConfig) -> tuple[list[Any], Counter[tuple[Any, ...]]]:
    """`_stage`, and the rows per (status, modality, field): the counts alone reach
    the driver. A corpus that cannot be read is a user error (one line)."""
    from culturesim_ray.pipeline.ray_env import user_error

    counts: Counter[tuple[Any, ...]] = Counter()
    with user_error():
        staged = _stage(files, roots, layout, cfg)
        for part in _map(ingest.status_counts, staged):
            for status, modality, field, n in part:
                counts[(status, modality, field)] += n
    return staged, counts


def _file_size(file: str, cfg: EmbedConfig) -> int:
    fs, p = io.filesystem_for(file, cfg.s3)
    return int(fs.size(p) or 0)


def _map(fn: Any, staged: list[Any], *args: Any) -> list[Any]:
    """fn(partition, *args) on every staged partition, as Ray tasks; the results."""
    import ray

    task = ray.remote(num_cpus=0.5)(fn)
    return ray.get([task.remote(ref, *args) for ref in staged])


def _map_refs(fn: Any, staged: list[Any], *args: Any) -> list[Any]:
    """fn(partition, *args) on every staged partition; the results' refs (the
    tables stay in the object store)."""
    import ray

    task = ray.remote(num_cpus=0.5)(fn)
    return [task.remote(ref, *args) for ref in staged]


def _map_each(fn: Any, staged: list[Any], args: list[Any]) -> list[Any]:
    """fn(partition_i, args[i]) on every partition, as Ray tasks; the results."""
    import ray

    task = ray.remote(num_cpus=0.5)(fn)
    return ray.get([task.remote(ref, a) for ref, a in zip(staged, args, strict=True)])


def _write_quarantine_part(table: pa.Table, path: str, s3: Any) -> int:
    """Ray task: one partition's bad rows written to the quarantine by the worker."""
    bad = ingest.quarantine_of_staged(table)
    if bad.num_rows:
        io.write_table(bad, path, s3)
    return bad.num_rows


def _strict_checks(staged: list[Any], cfg: EmbedConfig) -> None:
    firsts = [r for r in _map(lambda t: ingest.first_row(ingest.select(t, "bad")), staged) if r]
    if firsts:
        row = min(firsts, key=lambda r: r["_order"])
        raise StrictModeError(f"row {row['_source_row']}: {row['_reason']} "
                              "(--strict: no output written)")
    if not cfg.check_uris:
        return
    s3 = cfg.s3

    def first_missing(t: pa.Table) -> dict[str, Any] | None:
        t = ingest.select(t, "todo")
        t = t.filter(pa.compute.is_valid(t.column("uri")))
        found = io.existing_uris(t.column("uri").to_pylist(), s3)
        return ingest.first_row(t.filter(pa.array([u not in found
                                                   for u in t.column("uri").to_pylist()])))

    missing = [r for r in _map(first_missing, staged) if r]
    if missing:
        row = min(missing, key=lambda r: r["_order"])
        raise StrictModeError(f"row {row['_source_row']}: {ingest.missing_reason(row['uri'])} "
                              "(--strict: no output written)")
