"""From items to set-level heads, and from heads to pairs and S_total (pure).

`item_groups` says which items form each head's culture sets (general = all
items, theme t = the items carrying t), in the labels `ops.setsim` expects;
`set_options_used` is every option a set similarity runs with;
`topk_from_matrix` reads each culture's k best partners off a dense matrix;
`combine_matrices` is S_total = sum_t alpha_t S_t over matrices whose culture
sets differ (a culture without theme t contributes 0 for it), and
`combined_vectors` the same for cosine/dot as one concatenated vector per culture.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from culturesim_ray.ops.pooling import head_groups
from culturesim_ray.ops.setsim import REGISTRY

PAIRS_SCHEMA = pa.schema([("theme", pa.string()), ("culture_a", pa.string()),
                          ("culture_b", pa.string()), ("score", pa.float32()),
                          ("rank", pa.int32()), ("similarity", pa.string())])
MATRIX_SCHEMA = pa.schema([("culture_a", pa.string()), ("culture_b", pa.string()),
                           ("score", pa.float32())])


def item_groups(cultures: Sequence[str], themes: Sequence[Sequence[str] | None] | None = None,
                min_items: int = 1) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """head -> (cultures sorted, item indices (m,) int64, labels (m,) int64 into those cultures).

    Heads and culture sets match `ops.pooling.pool` with the same min_items: a
    culture with fewer items in a head is left out of it, with its items."""
    out = {}
    for head, members in head_groups(cultures, themes, min_items).items():
        names = list(members)
        idx = np.concatenate([np.asarray(members[c], np.int64) for c in names])
        labels = np.concatenate([np.full(len(members[c]), j, np.int64)
                                 for j, c in enumerate(names)])
        order = np.argsort(idx, kind="stable")  # items in input order
        out[head] = (names, idx[order], labels[order])
    return out


def topk_from_matrix(m: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of each row of a dense (n, n) similarity, the diagonal excluded.

    Returns (scores (n, k), indices (n, k) int64), best first; ties go to the
    lower index."""
    n = m.shape[0]
    if m.shape != (n, n):
        raise ValueError(f"expected a square matrix, got shape {tuple(m.shape)}")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k={k} out of range: must be in 1..{n - 1} ({n} cultures, self excluded)")
    s = m.clone()
    s.fill_diagonal_(float("-inf"))
    vals, idx = torch.sort(s, dim=1, descending=True, stable=True)
    return vals[:, :k], idx[:, :k]


def combine_matrices(mats: dict[str, tuple[list[str], np.ndarray]],
                     alpha: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """S_total = sum_t alpha_t S_t: (cultures of any theme, sorted; (N, N) float64)."""
    cultures = sorted({c for t in alpha for c in mats[t][0]})
    pos = {c: i for i, c in enumerate(cultures)}
    total = np.zeros((len(cultures), len(cultures)), np.float64)
    for t, a in alpha.items():
        cs, m = mats[t]
        idx = np.array([pos[c] for c in cs])
        total[np.ix_(idx, idx)] += a * np.asarray(m, np.float64)
    return cultures, total


def combined_vectors(heads: dict[str, tuple[list[str], np.ndarray]], alpha: dict[str, float],
                     sim: str) -> tuple[list[str], np.ndarray]:
    """Concatenated sqrt(alpha)-weighted theme vectors whose dot product is S_total
    (sim cosine: each theme's vectors unit-normalised first)."""
    cultures = sorted({c for t in alpha for c in heads[t][0]})
    pos = {c: i for i, c in enumerate(cultures)}
    parts = []
    for t, a in alpha.items():
        cs, v = heads[t]
        if sim == "cosine":
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        block = np.zeros((len(cultures), v.shape[1]), np.float32)
        block[[pos[c] for c in cs]] = v * math.sqrt(a)
        parts.append(block)
    return cultures, np.concatenate(parts, axis=1)


def set_options_used(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every keyword option of set similarity `name`: its defaults, updated by `given`."""
    params = inspect.signature(REGISTRY[name]).parameters
    used = {p: v.default for p, v in params.items() if p not in ("x", "labels", "n_sets", "block")}
    return {**used, **given}


def pairs_table(head: str, cultures: list[str], rows: np.ndarray, v: Tensor,
                idx: Tensor, sim_name: str) -> pa.Table:
    """The pairs contract for rows `rows` of a head: their top-k (v, idx (n, k), -1 = none)."""
    k = idx.shape[1]
    ok = (idx >= 0).reshape(-1).numpy()
    a = np.repeat(rows, k)[ok]
    b = idx.reshape(-1).numpy()[ok]
    names = pa.array(cultures, pa.string())
    return pa.table({
        "theme": pa.array([head] * len(a), pa.string()),
        "culture_a": names.take(pa.array(a, pa.int64())),
        "culture_b": names.take(pa.array(b, pa.int64())),
        "score": pa.array(v.reshape(-1).numpy()[ok].astype(np.float32)),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(rows))[ok]),
        "similarity": pa.array([sim_name] * len(a), pa.string()),
    }, schema=PAIRS_SCHEMA)


def matrix_table(cultures: list[str], m: np.ndarray) -> pa.Table:
    """A dense (N, N) matrix as culture_a, culture_b, score rows (row-major)."""
    n = len(cultures)
    names = pa.array(cultures, pa.string())  # N names; the N^2 rows are Arrow takes of them
    idx = np.arange(n, dtype=np.int64)
    return pa.table({"culture_a": names.take(pa.array(np.repeat(idx, n))),
                     "culture_b": names.take(pa.array(np.tile(idx, n))),
                     "score": pa.array(np.asarray(m).reshape(-1).astype(np.float32))},
                    schema=MATRIX_SCHEMA)


def aligned_heads(heads: dict[str, tuple[list[str], np.ndarray]], alpha: dict[str, float]
                  ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The theme heads of S_total on one culture list (every culture of any theme,
    sorted): per theme its (N, d_t) vectors (zero rows where absent) and its
    presence mask (N,) bool."""
    cultures = sorted({c for t in alpha for c in heads[t][0]})
    pos = {c: i for i, c in enumerate(cultures)}
    xs, masks = [], []
    for t in alpha:
        cs, v = heads[t]
        idx = np.array([pos[c] for c in cs], dtype=np.int64)
        x = np.zeros((len(cultures), v.shape[1]), np.float32)
        x[idx] = v
        m = np.zeros(len(cultures), bool)
        m[idx] = True
        xs.append(x)
        masks.append(m)
    return cultures, xs, masks


def combined_block_topk(xs: Sequence[Tensor], masks: Sequence[Tensor], weights: Sequence[float],
                        sims: Sequence[Any], i0: int, i1: int, k: int,
                        block_cols: int = 4096) -> tuple[Tensor, Tensor]:
    """Top-k of S_total = sum_t w_t S_t for rows i0..i1 against every row (self
    excluded), for any vector similarity: column block by column block, each
    theme's similarity counted only where both cultures have that theme (as
    `combine_matrices` does), accumulated in float64. Returns (scores (b, k)
    float64, indices (b, k))."""
    from culturesim_ray.ops.allpairs import _resolve

    n, b = xs[0].shape[0], i1 - i0
    fns = [_resolve(s)[1] for s in sims]
    best_v = torch.full((b, k), float("-inf"), dtype=torch.float64)
    best_i = torch.full((b, k), -1, dtype=torch.long)
    rows = torch.arange(i0, i1)
    for c0 in range(0, n, block_cols):
        c1 = min(n, c0 + block_cols)
        s = torch.zeros((b, c1 - c0), dtype=torch.float64)
        for x, m, w, fn in zip(xs, masks, weights, fns, strict=True):
            both = m[i0:i1, None] & m[None, c0:c1]
            s += w * fn(x[i0:i1], x[c0:c1]).double() * both
        cols = torch.arange(c0, c1)
        s[rows[:, None] == cols[None, :]] = float("-inf")
        v = torch.cat([best_v, s], dim=1)
        i = torch.cat([best_i, cols.expand(b, -1)], dim=1)
        top = torch.topk(v, min(k, v.shape[1]), dim=1)
        best_v, best_i = top.values, torch.gather(i, 1, top.indices)
    return best_v, best_i
