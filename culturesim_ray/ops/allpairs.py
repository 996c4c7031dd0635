"""Blockwise all-pairs top-k (SPEC J2): memory bounded by the block, not N^2.

`blockwise_topk(X, Y, k, sim, block_rows, block_cols, exclude_self)` walks
row blocks of X against column blocks of Y, keeps a running top-k per row and
never holds more than one (block_rows, block_cols) score block. With
`sim="cosine"` (or "dot") the rows are normalised once and each block is one
matrix product written into a reused buffer. The result equals the dense
top-k of `sim(X, Y)` up to ties.

`dense_similarity` is the small-N mode: the full (n, m) matrix.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from culturesim_ray.ops import similarity as S

SimLike = str | Callable[[Tensor, Tensor], Tensor]


def _resolve(sim: SimLike) -> tuple[str, Callable[[Tensor, Tensor], Tensor]]:
    if isinstance(sim, str):
        return sim, S.get(sim)
    return getattr(sim, "name", getattr(sim, "__name__", "custom")), sim


def check_vectors(x: Tensor, what: str = "X") -> None:
    """Reject empty, non-2-d, or non-finite input with the first bad row named."""
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d (n, d) tensor, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: no vectors (empty input)")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected floating point vectors, got {x.dtype}")
    bad = ~torch.isfinite(x).all(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"{what}: row {row} holds NaN or inf ({int(bad.sum())} such rows)")


def blockwise_topk(x: Tensor, y: Tensor | None = None, k: int = 10, sim: SimLike = "cosine",
                   block_rows: int = 4096, block_cols: int = 4096,
                   exclude_self: bool = False, row_offset: int = 0,
                   symmetric: bool = True) -> tuple[Tensor, Tensor]:
    """Top-k most similar rows of Y for every row of X.

    x: (n, d); y: (m, d), or None for X against itself. k: neighbours per row
    (k <= m, minus one with exclude_self). exclude_self: a row is not its own
    neighbour (same index; meaningful when Y is X). row_offset: X's row i is
    Y's row i + row_offset (X a slice of Y, as in one Ray task's block).
    symmetric: for a self-join with cosine or dot, compute each unordered pair
    once (tiles on and above the diagonal; every tile feeds the top-k of its
    rows and, transposed, of its columns): half the matrix products. Returns (scores (n, k),
    indices (n, k) int64), best first. Peak extra memory is one
    (block_rows, block_cols) block plus (block_rows, 2k) running state.
    """
    self_join = y is None or y is x
    y = x if y is None else y
    if row_offset and exclude_self is False:
        raise ValueError("row_offset only matters with exclude_self=True")
    check_vectors(x, "X")
    if not self_join:
        check_vectors(y, "Y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: X has d={x.shape[1]}, Y has d={y.shape[1]}")
    m = y.shape[0]
    limit = m - (1 if exclude_self else 0)
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} out of range: must be in 1..{limit} "
                         f"({m} candidates{', self excluded' if exclude_self else ''})")
    if block_rows < 1 or block_cols < 1:
        raise ValueError("block_rows and block_cols must be positive")
    name, fn = _resolve(sim)
    if self_join and symmetric and name in ("cosine", "dot"):
        if name == "cosine":
            x = x / x.norm(dim=1, keepdim=True).clamp_min(S.EPS)
        return _symmetric_gemm_topk(x, k, min(block_rows, block_cols), exclude_self)
    if name in ("cosine", "dot"):
        if name == "cosine":
            x = x / x.norm(dim=1, keepdim=True).clamp_min(S.EPS)
            y = x if self_join else y / y.norm(dim=1, keepdim=True).clamp_min(S.EPS)
        yt = y.T

        def block_fn(xb: Tensor, j0: int, j1: int, out: Tensor) -> Tensor:
            return torch.mm(xb, yt[:, j0:j1], out=out[: xb.shape[0], : j1 - j0])
    else:
        if isinstance(fn, S.Mahalanobis) and fn.chol is None:
            fn.fit(x if self_join else torch.cat([x, y]))

        def block_fn(xb: Tensor, j0: int, j1: int, out: Tensor) -> Tensor:
            return fn(xb, y[j0:j1])

    n = x.shape[0]
    scores = torch.empty((n, k), dtype=x.dtype, device=x.device)
    indices = torch.empty((n, k), dtype=torch.long, device=x.device)
    buf = torch.empty((min(block_rows, n), min(block_cols, m)), dtype=x.dtype, device=x.device)
    neg_inf = float("-inf")
    for i0 in range(0, n, block_rows):
        i1 = min(n, i0 + block_rows)
        xb = x[i0:i1]
        best_v = torch.full((i1 - i0, k), neg_inf, dtype=x.dtype, device=x.device)
        best_i = torch.zeros((i1 - i0, k), dtype=torch.long, device=x.device)
        for j0 in range(0, m, block_cols):
            j1 = min(m, j0 + block_cols)
            s = block_fn(xb, j0, j1, buf)  # (rows, cols)
            g0, g1 = i0 + row_offset, i1 + row_offset  # this block's rows as Y indices
            if exclude_self and g0 < j1 and j0 < g1:
                lo, hi = max(g0, j0), min(g1, j1)
                r = torch.arange(lo, hi, device=x.device)
                s[r - g0, r - j0] = neg_inf
            kk = min(k, j1 - j0)
            v, idx = torch.topk(s, kk, dim=1, sorted=False)
            cand_v = torch.cat([best_v, v], dim=1)
            cand_i = torch.cat([best_i, idx + j0], dim=1)
            best_v, pos = torch.topk(cand_v, k, dim=1)
            best_i = torch.gather(cand_i, 1, pos)
        scores[i0:i1] = best_v
        indices[i0:i1] = best_i
    return scores, indices


def _merge(best_v: Tensor, best_i: Tensor, v: Tensor, i: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Running top-k (r, k) merged with a candidate top-k (r, k')."""
    cand_v = torch.cat([best_v, v], dim=1)
    cand_i = torch.cat([best_i, i], dim=1)
    top_v, pos = torch.topk(cand_v, k, dim=1)
    return top_v, torch.gather(cand_i, 1, pos)


def column_topk(s: Tensor, k: int, group: int = 32) -> tuple[Tensor, Tensor]:
    """Top-k of every column of s (r, c), returned as (c, k) values and row ids.

    torch.topk along dim 0 walks memory with a stride; instead: the max of
    each group of `group` rows (a contiguous reduction), the k best groups
    per column, then the top-k among those groups' k * group rows. Exact up
    to ties: the k largest values of a column lie in its k groups with the
    largest maxima."""
    r, c = s.shape
    if r % group or r // group < k:
        v, i = torch.topk(s.T.contiguous(), k, dim=1, sorted=False)
        return v, i
    gmax = s.view(r // group, group, c).amax(1)  # (r/group, c)
    _, gi = torch.topk(gmax.T.contiguous(), k, dim=1, sorted=False)  # (c, k) groups
    rows = (gi[:, :, None] * group + torch.arange(group, device=s.device)).reshape(c, k * group)
    cand = torch.gather(s.T, 1, rows)  # (c, k * group)
    v, p = torch.topk(cand, k, dim=1, sorted=False)
    return v, torch.gather(rows, 1, p)


def _symmetric_gemm_topk(x: Tensor, k: int, block: int,
                         exclude_self: bool) -> tuple[Tensor, Tensor]:
    """Self-join top-k of x (n, d) by dot product, each unordered pair computed once."""
    n = x.shape[0]
    neg_inf = float("-inf")
    best_v = torch.full((n, k), neg_inf, dtype=x.dtype, device=x.device)
    best_i = torch.zeros((n, k), dtype=torch.long, device=x.device)
    buf = torch.empty((min(block, n), min(block, n)), dtype=x.dtype, device=x.device)
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        for j0 in range(i0, n, block):
            j1 = min(n, j0 + block)
            s = torch.mm(x[i0:i1], x[j0:j1].T, out=buf[: i1 - i0, : j1 - j0])  # (rows, cols)
            if j0 == i0 and exclude_self:
                s.fill_diagonal_(neg_inf)
            kk = min(k, j1 - j0)
            v, idx = torch.topk(s, kk, dim=1, sorted=False)
            best_v[i0:i1], best_i[i0:i1] = _merge(best_v[i0:i1], best_i[i0:i1], v, idx + j0, k)
            if j0 != i0:
                kk = min(k, i1 - i0)
                v, idx = column_topk(s, kk)
                best_v[j0:j1], best_i[j0:j1] = _merge(best_v[j0:j1], best_i[j0:j1], v, idx + i0, k)
    order = torch.argsort(best_v, dim=1, descending=True)  # best first, like the other path
    return torch.gather(best_v, 1, order), torch.gather(best_i, 1, order)


def dense_similarity(x: Tensor, y: Tensor | None = None, sim: SimLike = "cosine") -> Tensor:
    """The full (n, m) similarity matrix: for small N only."""
    y = x if y is None else y
    check_vectors(x, "X")
    check_vectors(y, "Y")
    _, fn = _resolve(sim)
    return fn(x, y)


def dense_topk(x: Tensor, y: Tensor | None = None, k: int = 10, sim: SimLike = "cosine",
               exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """Reference: top-k from the full matrix (what `blockwise_topk` must equal)."""
    s = dense_similarity(x, y, sim).clone()
    if exclude_self:
        s.fill_diagonal_(float("-inf"))
    return torch.topk(s, k, dim=1)
