"""The `vector` column of the embeddings and culture-embeddings contracts as a matrix.

The embed job writes `fixed_size_list<float32>`; files users bring (a culture
table, a spreadsheet's export) may hold variable `list<double>` instead. Both
become one (n, d) float32 array here, without a Python loop over rows; a row
without a vector, or of another length than the rest, is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def as_matrix(col: pa.Array | pa.ChunkedArray, what: str = "vector",
              row_offset: int = 0, writable: bool = False) -> np.ndarray:
    """(n, d) float32 from a list column. what: named in errors, with the row (counted
    from row_offset: the column is a chunk of a file). A fixed_size_list<float32>
    column comes back as a read-only view of Arrow's buffer (no copy); writable=True
    for callers that hand it to torch.from_numpy or change it in place."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
            or pa.types.is_fixed_size_list(col.type)):
        raise ValueError(f"{what}: vectors must be a list column, got {col.type}")
    n = len(col)
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{what}: row {row + row_offset} has no vector "
                         f"({col.null_count} such rows)")
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
    else:
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        d = int(lengths[0]) if n else 0
        if n and (lengths != d).any():
            bad = int(np.flatnonzero(lengths != d)[0])
            raise ValueError(f"{what}: mixed vector dimensions {sorted(set(lengths.tolist()))}; "
                             f"row {bad + row_offset} has {int(lengths[bad])} vs {d} in row "
                             f"{row_offset}")
    out = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32)
    if writable and not out.flags.writeable:
        out = out.copy()
    return out.reshape(n, d)


def culture_table(heads: dict[str, tuple[Sequence[str] | pa.Array, np.ndarray]]) -> pa.Table:
    """The culture-embeddings contract: culture, head, vector (list<float32>; heads may
    differ in width) from head -> (cultures, (n, d) matrix), built from Arrow arrays
    (large_list past 2**31 - 1 floats)."""
    names, counts, flats, lengths = [], [], [], []
    for h, (cs, v) in heads.items():
        v = np.asarray(v)
        if v.size == 0 and v.ndim == 1:  # no cultures: (0,) as (0, 0)
            v = v.reshape(0, 0)
        if v.ndim != 2 or len(cs) != len(v):
            raise ValueError(f"head {h!r}: {len(cs)} cultures for vectors of shape {v.shape}")
        names.append(cs.cast(pa.string()) if isinstance(cs, pa.Array)
                     else pa.array(list(cs), pa.string()))
        counts.append(len(cs))
        flats.append(np.ascontiguousarray(v, dtype=np.float32).reshape(-1))
        lengths.append(np.full(len(cs), v.shape[1], np.int64))
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths) if lengths else [])])
    flat = pa.array(np.concatenate(flats) if flats else np.zeros(0, np.float32), pa.float32())
    big = offsets[-1] > np.iinfo(np.int32).max
    kind = pa.LargeListArray if big else pa.ListArray
    vectors = kind.from_arrays(pa.array(offsets.astype(np.int64 if big else np.int32)), flat)
    head = np.repeat(np.array(list(heads), dtype=object), counts)
    return pa.table({"culture": pa.concat_arrays(names) if names else pa.array([], pa.string()),
                     "head": pa.array(head, pa.string()), "vector": vectors})
