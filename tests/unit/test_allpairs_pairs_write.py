"""The pairs file is streamed from the block files, one block in memory at a time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from culturesim_ray import io
from culturesim_ray.config import AllPairsConfig
from culturesim_ray.layout import AllPairsLayout
from culturesim_ray.ops.set_pairs import PAIRS_SCHEMA, pairs_table
from culturesim_ray.pipeline.allpairs_tasks import _write_pairs


def _write_blocks(out: str, head: str, cultures: list[str], n_blocks: int, k: int,
                  rng: np.random.Generator) -> list[pa.Table]:
    tables = []
    rows = np.arange(len(cultures))
    for i, part in enumerate(np.array_split(rows, n_blocks)):
        v = torch.from_numpy(rng.random((len(part), k)).astype(np.float32))
        idx = torch.from_numpy(rng.integers(-1, len(cultures), (len(part), k)))
        t = pairs_table(head, cultures, part, v, idx, "cosine")
        io.write_table(t, io.join(AllPairsLayout(out).blocks(head), f"block-{i:05d}.parquet"))
        tables.append(t)
    return tables


def test_streamed_pairs_equal_the_blocks_in_order(tmp_path):
    rng = np.random.default_rng(0)
    out = str(tmp_path / "allpairs")
    cultures = [f"c{i}" for i in range(23)]
    general = _write_blocks(out, "general", cultures, 4, 3, rng)
    food = _write_blocks(out, "food", cultures, 2, 3, rng)
    jobs = {"general": None, "food": None}
    n = _write_pairs(out, jobs, AllPairsConfig())
    got = pq.read_table(AllPairsLayout(out).pairs)
    want = pa.concat_tables(general + food)
    assert n == want.num_rows == got.num_rows > 0
    assert got.schema.equals(PAIRS_SCHEMA)
    assert got.equals(want)


def test_no_blocks_write_an_empty_pairs_file(tmp_path):
    out = str(tmp_path / "allpairs")
    assert _write_pairs(out, {"general": None}, AllPairsConfig()) == 0
    t = pq.read_table(AllPairsLayout(out).pairs)
    assert t.num_rows == 0 and t.schema.equals(PAIRS_SCHEMA)
