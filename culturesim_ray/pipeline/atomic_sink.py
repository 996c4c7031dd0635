"""A Ray Data sink whose Parquet files appear whole or not at all (the embed job's
writer): a job killed mid-write leaves no partial file for a reader or a rerun to
trip on."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from culturesim_ray import io


class AtomicParquetSink(Datasink[int]):
    """Each write task writes its rows as Parquet files of at most `rows_per_file`
    rows, each through `io.write_table` (a hidden temp file in the same folder,
    renamed into place). Names carry this write's id and the task index, so a
    retried task rewrites its own files instead of adding twins."""

    def __init__(self, path: str, s3: Any, rows_per_file: int) -> None:
        self.path, self.s3, self.rows_per_file = path, s3, rows_per_file
        self.write_id = uuid.uuid4().hex[:16]

    def write(self, blocks: Iterable[Block], ctx: Any) -> int:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables(tables, promote_options="default")
        for i, start in enumerate(range(0, table.num_rows, self.rows_per_file)):
            name = f"{self.write_id}_{ctx.task_idx:06d}_{i:06d}.parquet"
            io.write_table(table.slice(start, self.rows_per_file), io.join(self.path, name),
                           self.s3)
        return table.num_rows
