"""The `vector` column of the embeddings and culture-embeddings contracts as a matrix.

The embed job writes `fixed_size_list<float32>`; files users bring (a culture
table, a spreadsheet's export) may hold variable `list<double>` instead. Both
become one (n, d) float32 array here, without a Python loop over rows; a row
without a vector, or of another length than the rest, is an error naming it.
"""

from __future__ import annotations

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
